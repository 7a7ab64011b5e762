"""Two registry replicas on one PostgreSQL database, with their artifacts in it: a version
uploaded through one is downloaded through the other; uploads racing through both get unique
numbers, one champion, and each `models` event once and in order; and a client given both
URLs keeps working when one replica is SIGKILLed."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.registry_client import RegistryClient
from shared.serialization import digest
from tests.fixtures import demo_artifact, demo_schema
from tests.integration.conftest import postgres_database, read_all, start_stack, stop_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with postgres_database() as database:
        running = start_stack(
            tmp_path, ("registry",), replicas={"registry": 2}, CTLOOP_REGISTRY_DB_URL=database
        )
        yield running
        stop_stack(running)


def upload(stack: Stack, url: str, seed: int) -> httpx.Response:
    artifact, digest = demo_artifact(rows=120, seed=seed)
    meta = VersionMetadata(
        digest=digest,
        input_schema=demo_schema(),
        gate_report=GateReport(passed=True, gates=[]),
        metrics={"accuracy": 0.9},
        lineage=Lineage(run_id=f"run-{seed}", trigger="manual"),
    )
    return httpx.post(
        f"{url}/v1/models/demo/versions",
        headers=stack.auth("trainer"),
        files={"artifact": ("model.skops", artifact)},
        data={"metadata": meta.model_dump_json()},
        timeout=60,
    )


def test_replicas_share_versions_artifacts_and_one_outbox(stack: Stack) -> None:
    first, second = stack.urls("registry")
    created = upload(stack, first, seed=1)
    assert created.status_code == 201, created.text
    artifact = httpx.get(f"{second}/v1/models/demo/versions/1/artifact", headers=stack.auth(), timeout=30)
    assert artifact.status_code == 200 and digest(artifact.content) == created.json()["digest"]

    # uploads racing through both replicas
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send(seed: int) -> None:
        response = upload(stack, (first, second)[seed % 2], seed)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(2, 14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(r.status_code for r in answers) == [201] * 12, [
        r.text for r in answers if r.status_code != 201
    ]
    assert sorted(r.json()["version"] for r in answers) == list(range(2, 14))  # unique, no gaps
    champions = {
        httpx.get(f"{url}/v1/models/demo/aliases/champion", headers=stack.auth()).json()["version"]
        for url in (first, second)
    }
    assert len(champions) == 1  # both replicas name one champion

    events = read_all(
        stack.bootstrap,
        topics.MODELS,
        lambda es: len({e.payload["version"] for e in es if e.type == "model.registered"}) == 13,
    )
    assert max(Counter(e.event_id for e in events).values()) == 1  # each event sent once
    registered = [e.payload["version"] for e in events if e.type == "model.registered"]
    assert registered == list(range(1, 14))  # in order
    promoted = [
        e.payload["version"]
        for e in events
        if e.type == "model.promoted" and e.payload["alias"] == "champion"
    ]
    assert promoted == sorted(promoted) and promoted[-1] in champions

    # a client given both URLs goes on when the one it used dies
    client = RegistryClient(f"{first},{second}", stack.token("reader"))
    assert client.alias("demo") is not None
    stack.processes["registry"].send_signal(signal.SIGKILL)
    stack.processes["registry"].wait(30)
    found = client.alias("demo")
    assert found is not None and found.version in champions
    writer = RegistryClient(f"{first},{second}", stack.token("trainer"))
    artifact_bytes, artifact_digest = demo_artifact(rows=120, seed=99)
    meta = VersionMetadata(
        digest=artifact_digest,
        input_schema=demo_schema(),
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="run-99", trigger="manual"),
    )
    assert writer.upload("demo", artifact_bytes, meta).version == 14  # a refused connection moves on
