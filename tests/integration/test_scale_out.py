"""The loop with several replicas of every service (3 monitors, 2 trainers, 2 registries on
PostgreSQL, 2 serving, 2 ingest) on the embedded broker with 3 partitions: the demo's stream
through the replicas' ports (spread by the client: balancing is the platform's job); mid-stream
one replica of each service is SIGKILLed, the active trainer among them (the killed serving
replica is started again, as the platform would); then the concept changes. The loop must
close on every serving replica, with no failed request to a live replica, each trigger trained
once, each labelled record in the trainer's store once, unique versions, and each `models`
event once per change."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from services.demo.stream import ConceptStream
from services.supervisor import Stack
from shared import topics
from shared.events import Envelope
from tests.integration.conftest import health, postgres_database, read_all, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

REPLICAS = {"monitor": 3, "trainer": 2, "registry": 2, "serving": 2, "ingest": 2}
WARMUP, BEFORE_DRIFT, LABEL_DELAY, BATCH = 1000, 1200, 50, 20
KILL_AT = 400
"""Streamed records (after the warm-up) before one replica of each service is killed."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with postgres_database() as database:
        running = start_stack(
            tmp_path,
            replicas=REPLICAS,
            CTLOOP_REGISTRY_DB_URL=database,
            CTLOOP_TRAINER_MIN_POST_DRIFT="300",
        )
        yield running
        stop_stack(running)


def metric(url: str, name: str) -> float | None:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Client:
    """Spreads requests over the live replicas of a service, counting failures."""

    def __init__(self, stack: Stack, service: str, role: str) -> None:
        self.live = dict(zip(stack.names[service], stack.urls(service), strict=True))
        self.http = httpx.Client(timeout=30, headers=stack.auth(role))  # type: ignore[arg-type]
        self._turn = itertools.count()
        self.failures: list[str] = []

    def post(self, path: str, body: dict[str, object]) -> httpx.Response | None:
        names = sorted(self.live)
        name = names[next(self._turn) % len(names)]
        try:
            response = self.http.post(f"{self.live[name]}{path}", json=body)
        except httpx.HTTPError as exc:
            self.failures.append(f"{name} {path}: {exc}")
            return None
        if response.status_code != 200:
            self.failures.append(f"{name} {path}: {response.status_code} {response.text[:200]}")
            return None
        return response


def kill(stack: Stack, name: str) -> None:
    stack.processes[name].send_signal(signal.SIGKILL)
    stack.processes[name].wait(30)


def test_the_loop_closes_on_replicas_when_one_of_each_dies(stack: Stack) -> None:
    ingest, serving = Client(stack, "ingest", "producer"), Client(stack, "serving", "reader")
    stream = ConceptStream(seed=7, drift_at=WARMUP + BEFORE_DRIFT, prefix="s")
    labelled: set[str] = set()
    for _ in range(WARMUP // 200):
        batch = [{**record, "label": label} for record, label in stream.take(200)]
        assert ingest.post("/v1/records", {"records": batch}) is not None, ingest.failures
        labelled |= {r["id"] for r in batch}
    # a client's retry landing on the other ingest replica: written twice, counted once below
    assert ingest.post("/v1/records", {"records": batch}) is not None, ingest.failures
    wait_for(
        lambda: all(health(url).get("model_version") for url in stack.urls("serving")),
        "a first model on every serving replica",
        240,
    )
    first = int(health(stack.url("serving"))["model_version"])  # type: ignore[call-overload]

    trainers = dict(zip(stack.names["trainer"], stack.urls("trainer"), strict=True))
    active = next(name for name, url in trainers.items() if health(url).get("active"))
    standby = next(name for name in trainers if name != active)
    victims = {"ingest-2", "serving-2", "monitor-3", "registry", active}

    pending: list[dict[str, object]] = []
    sent, killed, new_version = 0, False, None
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        if sent == KILL_AT and not killed:
            for name in victims:
                kill(stack, name)
                for client in (ingest, serving):
                    client.live.pop(name, None)
            stack.spawn("serving-2")  # the platform restarts it; it rejoins once it answers
            killed = True
        if killed and "serving-2" not in serving.live and health(stack.url("serving-2")).get("model_version"):
            serving.live["serving-2"] = stack.url("serving-2")
        items = list(stream.take(BATCH))
        response = serving.post("/v1/predict", {"records": [r for r, _ in items]})
        assert response is not None, serving.failures
        pending += [{"id": r["id"], "label": label} for r, label in items]
        due, pending = (
            pending[: max(0, len(pending) - LABEL_DELAY)],
            pending[max(0, len(pending) - LABEL_DELAY) :],
        )
        if due:
            assert ingest.post("/v1/labels", {"labels": due}) is not None, ingest.failures
            labelled |= {str(d["id"]) for d in due}
        sent += len(items)
        versions = {int(p["model_version"]) for p in response.json()["predictions"]}
        if stream.index > WARMUP + BEFORE_DRIFT and max(versions) > first and new_version is None:
            new_version = max(versions)
        if new_version is not None and all(
            (health(url).get("model_version") or 0) >= new_version
            for url in serving.live.values()  # type: ignore[operator]
        ):
            break  # (a second version after it fails the one-run check below, saying why)
        time.sleep(BATCH / 300)  # ~300 records/s, the demo's rate
    assert new_version is not None, "no model trained after the drift was served in time"
    assert "serving-2" in serving.live  # the restarted replica took traffic again
    assert ingest.failures == [] and serving.failures == []  # no request to a live replica failed

    # every labelled record is in the (new) active trainer's store exactly once
    assert health(trainers[standby]).get("active")
    held: list[float | None] = []  # the counts read, for the message when they never match
    try:
        wait_for(
            lambda: (
                held.append(metric(trainers[standby], "ctloop_trainer_examples")) or held[-1] == len(labelled)
            ),
            f"the active trainer to hold {len(labelled)} examples, each once",
            120,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it held {sorted(set(held), key=held.index)[-5:]}") from None

    # each trigger trained once; the drift's triggers answered by one run
    training = read_all(stack.bootstrap, topics.TRAINING, lambda es: len(es) > 0, quiet_s=5)
    ended = [e for e in training if e.type in ("training.completed", "training.failed")]
    answered = Counter(
        trigger for e in ended for trigger in [e.payload["trigger_event_id"], *e.payload["merged"]] if trigger
    )
    assert max(answered.values(), default=1) == 1, answered
    drift_runs = [e for e in ended if e.payload["trigger"] == "drift"]
    drifts = read_all(stack.bootstrap, topics.DRIFT, lambda es: len(es) > 0, quiet_s=2)
    said = [
        (
            e.type,
            e.source.instance,
            str(e.occurred_at)[11:23],
            e.payload.get("reference_version"),
            e.payload.get("version"),
        )
        for e in sorted(drifts + training, key=lambda e: e.occurred_at)
    ]
    assert [e.payload["version"] for e in drift_runs if e.type == "training.completed"] == [new_version], said
    print("drift run merged:", drift_runs[-1].payload["merged"])

    # unique versions, each models event once per change, serving replicas converged
    def serving_at(events: list[Envelope]) -> dict[str, float]:
        """Each serving replica's first swap to the drift's model or a later one (a restarted
        replica may come up after a refresh and skip it)."""
        first: dict[str, float] = {}
        for e in events:
            if e.type == "model.swapped" and e.payload["version"] >= new_version:
                first.setdefault(e.source.instance, _at(e))
        return first

    # (a replica restarted while the registry was down swaps once it answers: wait for it)
    models = read_all(
        stack.bootstrap, topics.MODELS, lambda es: {"serving", "serving-2"} <= set(serving_at(es)), quiet_s=5
    )
    assert max(Counter(e.event_id for e in models).values()) == 1
    changes = [
        (e.type, e.payload["version"], e.payload.get("alias"), e.payload.get("previous_version"))
        for e in models
        if e.type in ("model.registered", "model.promoted")
    ]
    assert max(Counter(changes).values()) == 1, changes
    registered = [c[1] for c in changes if c[0] == "model.registered"]
    assert registered == sorted(set(registered))
    swapped_at = serving_at(models)
    assert {"serving", "serving-2"} <= set(swapped_at), swapped_at
    spread = max(swapped_at.values()) - min(swapped_at.values())
    print(f"serving replicas took v{new_version} within {spread:.2f} s of each other")


def _at(event: Envelope) -> float:
    return datetime.fromisoformat(str(event.occurred_at)).timestamp()
