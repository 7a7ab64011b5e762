"""Faults on real processes: each service SIGKILLed in the middle of its work and restarted,
the broker paused for longer than the session timeout, the registry unreachable during a
swap, and a storm of drift events. What counts: no labelled example lost or counted twice
(by record id, end to end), no duplicate model version, no half-written artifact, and every
service recovering on its own."""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.demo.driver import DemoConfig, run_demo
from services.demo.stream import ConceptStream
from services.supervisor import Stack
from shared import topics
from shared.events import DriftDetected, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from tests.integration.conftest import read_all, restart, start_stack, stop_stack, upload_demo, wait_for
from tests.integration.proxy import Proxy

pytestmark = pytest.mark.integration

GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


def metric(stack: Stack, service: str, name: str) -> float | None:
    try:
        text = httpx.get(f"{stack.url(service)}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def send_until_accepted(stack: Stack, batch: list[dict]) -> int:
    """What a well-behaved client does: retry the same batch (same ids) until it is accepted.
    Returns how many attempts failed."""
    failures = 0
    deadline = time.monotonic() + 180
    while True:
        with contextlib.suppress(httpx.HTTPError):  # a refused connection is one more failed try
            response = httpx.post(
                f"{stack.url('ingest')}/v1/records",
                json={"records": batch},
                timeout=30,
                headers=stack.auth("producer"),
            )
            if response.status_code == 200:
                body = response.json()
                assert not body["rejected"], body
                return failures
        failures += 1
        assert time.monotonic() < deadline, "ingest never accepted the batch again"
        time.sleep(0.5)


def served_version(stack: Stack) -> int | None:
    try:
        return httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version")
    except httpx.HTTPError:
        return None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(
        tmp_path,
        CTLOOP_TRAINER_MIN_EXAMPLES="300",
        CTLOOP_TRAINER_MIN_POST_DRIFT="200",
        CTLOOP_MONITOR_COOLDOWN_S="0",
    )
    running.folder = tmp_path  # type: ignore[attr-defined]
    yield running
    stop_stack(running)


def test_sigkill_each_service_loses_and_doubles_nothing(stack: Stack) -> None:
    stream = ConceptStream(seed=11, drift_at=10**9, prefix="k")
    sent: list[str] = []
    retries: list[int] = []
    # For every service in turn: a labelled batch of 200 is being sent (by a client that
    # retries it until accepted) while the service is SIGKILLed, then one more after.
    for service in ("ingest", "monitor", "trainer", "registry", "serving", "ingest", "trainer"):
        during = [{**record, "label": label} for record, label in stream.take(200)]
        sender = threading.Thread(
            target=lambda batch=during: retries.append(send_until_accepted(stack, batch))
        )
        sender.start()
        restart(stack, service)
        sender.join(240)
        after = [{**record, "label": label} for record, label in stream.take(100)]
        retries.append(send_until_accepted(stack, after))
        sent += [r["id"] for r in during + after]
    expected = set(sent)
    assert len(expected) == len(sent) == 2100 and len(retries) == 14

    # every labelled record became exactly one example in the trainer, after all the kills
    examples = read_all(
        stack.bootstrap, topics.EXAMPLES, lambda events: {e.payload["record_id"] for e in events} >= expected
    )
    assert {e.payload["record_id"] for e in examples} == expected  # nothing lost, nothing foreign
    wait_for(
        lambda: metric(stack, "trainer", "ctloop_trainer_examples") == len(expected),
        "the trainer to hold each example exactly once",
    )
    restart(stack, "trainer")  # its store is rebuilt from the topic, still exactly once
    wait_for(
        lambda: metric(stack, "trainer", "ctloop_trainer_examples") == len(expected),
        "the restarted trainer to rebuild its example store",
    )

    # models: numbers never reused, each artifact complete and named by its digest
    wait_for(lambda: served_version(stack), "a first model to be served")
    versions = httpx.get(
        f"{stack.url('registry')}/v1/models/demo/versions", timeout=10, headers=stack.auth()
    ).json()
    numbers = [v["version"] for v in versions]
    assert len(numbers) == len(set(numbers)) >= 1
    # artifacts are filed as <2 hex>/<64 hex>, written to a temporary name then moved
    files = [p for p in (stack.folder / "registry" / "artifacts").rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    stored = [p for p in files if re.fullmatch(r"[0-9a-f]{64}", p.name)]
    assert stored and len(stored) == len(files), f"half-written or stray files: {files}"
    for path in stored:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupt artifact {path}"
    digests = {v["digest"].split(":", 1)[1] for v in versions}
    assert digests <= {p.name for p in stored}, "a registered version without its artifact"
    print(f"client retries across the kills: {sum(retries)}")

    # and after all that, the loop still closes: a concept drift ends in a new served model
    config = DemoConfig(seed=3, warmup=200, drift_at=1500, after_swap=300, timeout_s=240)
    report = run_demo(stack, config, say=lambda _: None)
    assert report.closed, report.reason
    assert report.failed_requests == 0


def test_broker_paused_past_the_session_timeout(stack: Stack) -> None:
    upload_demo(stack, seed=1, rows=300)
    wait_for(lambda: served_version(stack) == 1, "serving to load v1")
    assert stack.broker is not None
    stack.broker.pause()
    paused_at = time.monotonic()
    try:
        # ingest refuses (503 + Retry-After) instead of accepting what it cannot write
        refused = httpx.post(
            f"{stack.url('ingest')}/v1/records",
            json={"records": [{"id": "p-1", "features": GOOD, "label": 1}]},
            timeout=60,
            headers=stack.auth("producer"),
        )
        assert refused.status_code == 503 and "retry-after" in refused.headers
        # serving keeps answering from the model in memory
        while time.monotonic() - paused_at < 20:  # the session timeout is 8 s
            answer = httpx.post(f"{stack.url('serving')}/v1/predict", json={"features": GOOD}, timeout=10)
            assert answer.status_code == 200 and answer.json()["model_version"] == 1
            time.sleep(0.5)
    finally:
        stack.broker.resume()
    # every service recovers on its own: a record sent now flows to an example, the registry
    # publishes a new version, and serving follows it
    send_until_accepted(stack, [{"id": "p-1", "features": GOOD, "label": 1}])
    read_all(
        stack.bootstrap, topics.EXAMPLES, lambda events: any(e.payload["record_id"] == "p-1" for e in events)
    )
    wait_for(
        lambda: (metric(stack, "trainer", "ctloop_trainer_examples") or 0) >= 1, "the trainer to read it"
    )
    upload_demo(stack, seed=2, rows=300)
    wait_for(lambda: served_version(stack) == 2, "serving to follow the promotion after the pause", 120)


def test_registry_unreachable_during_a_swap_then_the_swap_completes(stack: Stack) -> None:
    upload_demo(stack, seed=1, rows=300)
    wait_for(lambda: served_version(stack) == 1, "serving to load v1")
    # serving reaches the registry through a proxy that the test takes down
    proxy = Proxy(stack.ports["registry"]).up()
    stack.processes["serving"].send_signal(signal.SIGTERM)
    stack.processes["serving"].wait(30)
    stack.env["CTLOOP_REGISTRY_URL"] = f"http://127.0.0.1:{proxy.port}"
    try:
        stack.spawn("serving")
    finally:
        stack.env["CTLOOP_REGISTRY_URL"] = stack.url("registry")
    wait_for(lambda: served_version(stack) == 1, "serving to come back with v1")
    proxy.down()
    upload_demo(stack, seed=2, rows=300)  # promoted: serving is told, cannot fetch
    answers: list[int] = []
    failures = [0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(f"{stack.url('serving')}/v1/predict", json={"features": GOOD})
                if response.status_code == 200:
                    answers.append(response.json()["model_version"])
                else:
                    failures[0] += 1

    worker = threading.Thread(target=client)
    worker.start()
    try:
        wait_for(lambda: len(answers) > 50, "requests answered while the registry is unreachable")
        end = time.monotonic() + 6  # three of serving's 2 s retries
        while time.monotonic() < end:
            assert served_version(stack) == 1  # still the old model, never nothing
            time.sleep(0.5)
        proxy.up()
        wait_for(lambda: served_version(stack) == 2, "the swap once the registry is back", 120)
        wait_for(lambda: answers[-1] == 2, "answers from v2")
    finally:
        stop.set()
        worker.join(30)
        proxy.down()
    assert failures[0] == 0 and set(answers) <= {1, 2}


def test_a_drift_storm_makes_one_training_run(stack: Stack) -> None:
    stream = ConceptStream(seed=5, drift_at=10**9, prefix="s")
    for _ in range(4):
        send_until_accepted(stack, [{**r, "label": y} for r, y in stream.take(100)])
    wait_for(lambda: served_version(stack), "the cold-start model", 180)
    champion = served_version(stack)
    before = {r["run_id"] for r in httpx.get(f"{stack.url('trainer')}/v1/runs", timeout=10).json()}
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    source = Source(service="storm", instance="test")
    onset = datetime.now(UTC) - timedelta(minutes=10)
    for i in range(100):
        drift = DriftDetected(
            model_name="demo",
            reference_version=champion,
            kind="feature",
            window_start=onset,
            window_end=onset,
            window_size=500,
            onset_time=onset,
            detector=f"storm-{i}",
        )
        producer.send(topics.DRIFT, encode_event(drift, source)[1], b"demo")
    producer.flush(30)
    producer.close()

    def drift_runs() -> list[dict]:
        runs = httpx.get(f"{stack.url('trainer')}/v1/runs", timeout=10).json()
        return [r for r in runs if r["run_id"] not in before and r["trigger"]["kind"] == "drift"]

    def triggers(outcome: str) -> float:
        return (
            metric(stack, "trainer", f'ctloop_trainer_triggers_total{{kind="drift",outcome="{outcome}"}}')
            or 0
        )

    wait_for(
        lambda: triggers("queued") + triggers("merged") == 100, "the trainer to take all 100 drift events"
    )
    try:
        wait_for(
            lambda: any(r["status"] in ("completed", "failed") for r in drift_runs()), "the drift run", 180
        )
    except AssertionError:
        runs = httpx.get(f"{stack.url('trainer')}/v1/runs", timeout=10).json()
        raise AssertionError(
            f"no drift run; runs: {[(r['trigger']['kind'], r['status']) for r in runs]}; "
            f"queued {triggers('queued')}, merged {triggers('merged')}"
        ) from None
    runs = drift_runs()
    assert triggers("queued") == 1 and len(runs) == 1, runs  # one run; the storm cannot start another
    assert len(runs[0]["trigger"]["merged"]) == 99  # the rest were merged into it, not lost
