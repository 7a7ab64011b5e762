"""Two monitor workers in one faust group share the data topics, and both follow every
promotion: `models` has one partition per model name, so a shared group gave it to one worker
only and the other kept testing its windows against a stale reference. The outcomes each joins
(predictions with their labels) are judged by one of them: the error stream is whole."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.broker import free_port
from shared.events import Prediction, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from shared.validation import Label
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def two_monitors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[str]]]:
    stack = start_stack(tmp_path_factory.mktemp("monitors"), ("registry", "monitor"))
    port = free_port()
    log = (tmp_path_factory.mktemp("monitor-2") / "monitor-2.log").open("w")
    second = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "monitor"],
        env={**stack.env, "CTLOOP_MONITOR_PORT": str(port), "CTLOOP_INSTANCE": "monitor-2"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    urls = [stack.url("monitor"), f"http://127.0.0.1:{port}"]
    try:
        yield stack, urls
    finally:
        second.terminate()
        second.wait(30)
        log.close()
        stop_stack(stack)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False  # not listening yet


def status(stack: Stack, url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{url}/v1/drift/status", timeout=5, headers=stack.auth())
    except httpx.HTTPError:
        return None
    found: dict[str, object] = response.json()
    return found


def test_every_monitor_worker_follows_every_promotion_and_one_judges_every_label(
    two_monitors: tuple[Stack, list[str]],
) -> None:
    stack, urls = two_monitors
    for url in urls:
        wait_for(lambda url=url: ready(url), f"{url} ready", 180)
    for expected, seed in ((1, 1), (2, 2)):
        assert upload_demo(stack, seed=seed)["version"] == expected
        for url in urls:
            wait_for(
                lambda url=url, expected=expected: (
                    (status(stack, url) or {}).get("reference_version") == expected
                ),
                f"{url} to take v{expected} as its reference",
                120,
            )

    # Labelled champion predictions spread over every partition: one worker judges them all.
    labelled = 60
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    source, now = Source(service="test", instance="t"), datetime.now(UTC)
    features = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}
    partitions = set()
    for i in range(labelled):
        key = f"outcome-{i}"
        prediction = Prediction(
            prediction_id=f"p-{i}",
            record_id=key,
            model_name="demo",
            model_version=2,
            features=features,  # type: ignore[arg-type]
            prediction=i % 2,
            probabilities={"0": 0.5, "1": 0.5},
            event_time=now,
        )
        sent = producer.send(topics.PREDICTIONS, encode_event(prediction, source)[1], key=key.encode())
        partitions.add(sent.get(30).partition)
        producer.send(
            topics.LABELS, encode_event(Label(id=key, label=1, event_time=now), source)[1], key=key.encode()
        )
    producer.flush(30)
    producer.close()
    assert len(partitions) > 1  # the joins happen in both workers

    def judged() -> list[int]:
        counts = []
        for url in urls:
            counts.append(int((status(stack, url) or {}).get("labelled_predictions", 0)))  # type: ignore[call-overload]
        return sorted(counts)

    wait_for(lambda: judged() == [0, labelled], "one worker to judge every labelled prediction", 120)
