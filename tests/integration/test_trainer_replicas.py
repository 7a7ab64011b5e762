"""Two trainer replicas: one is active (it holds the control topic's partition), the other keeps
its examples warm; a run request made to the standby is run by the active one; when the
active one is SIGKILLed with a drift trigger pending, the standby takes over within 30 s and
runs that trigger exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from services.supervisor import Stack
from shared import topics
from shared.events import DriftDetected, Envelope, Example, Source, encode_event
from tests.fixtures import demo_rows
from tests.integration.conftest import health, read_all, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(
        tmp_path,
        ("registry", "trainer"),
        replicas={"trainer": 2},
        CTLOOP_TRAINER_MIN_EXAMPLES="300",
        CTLOOP_TRAINER_MIN_POST_DRIFT="200",
    )
    yield running
    stop_stack(running)


def produce(stack: Stack, payloads: list[Example] | list[DriftDetected], topic: str) -> list[str]:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    source = Source(service="test", instance="t")
    ids = []
    for payload in payloads:
        event_id, value = encode_event(payload, source)
        producer.send(topic, key=b"demo", value=value)
        ids.append(event_id)
    producer.flush(30)
    producer.close()
    return ids


def examples(prefix: str, n: int, at: datetime, seed: int) -> list[Example]:
    return [
        Example(
            record_id=f"{prefix}-{i}",
            event_time=at + timedelta(milliseconds=i),
            features=row,  # type: ignore[arg-type]
            label=int(float(row["x1"]) > 0),  # type: ignore[arg-type]
        )
        for i, row in enumerate(demo_rows(n, seed=seed))
    ]


def runs_of(events: list[Envelope], trigger_id: str) -> list[Envelope]:
    """The completed or failed runs that answered `trigger_id` (as their trigger or merged)."""
    return [
        e
        for e in events
        if e.type in ("training.completed", "training.failed")
        and trigger_id in [e.payload.get("trigger_event_id"), *e.payload.get("merged", [])]
    ]


# 50 s: in `make test-long`; test_scale_out.py kills the active trainer in `make test`
@pytest.mark.long
def test_one_trainer_runs_and_a_standby_takes_over_a_pending_trigger(stack: Stack) -> None:
    urls = dict(zip(stack.names["trainer"], stack.urls("trainer"), strict=True))
    wait_for(
        lambda: sum(bool(health(u).get("active")) for u in urls.values()) == 1, "one active trainer", 120
    )
    active = next(name for name, url in urls.items() if health(url).get("active"))
    standby = next(name for name in urls if name != active)

    # the cold start is run once, by the active replica
    t0 = datetime.now(UTC) - timedelta(hours=1)
    produce(stack, examples("a", 400, t0, seed=1), topics.EXAMPLES)
    training = read_all(
        stack.bootstrap,
        topics.TRAINING,
        lambda es: any(e.type == "training.completed" for e in es),
        timeout_s=180,
    )
    assert [e.payload["trigger"] for e in training if e.type == "training.started"] == ["cold_start"]
    assert {e.source.instance for e in training} == {active}
    wait_for(lambda: health(urls[standby]).get("examples") == 400, "the standby's examples to be warm", 60)

    # a run asked of the standby is run by the active one
    asked = httpx.post(f"{urls[standby]}/v1/runs", headers=stack.auth("operator"), timeout=30)
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["event_id"]
    training = read_all(
        stack.bootstrap, topics.TRAINING, lambda es: len(runs_of(es, request_id)) == 1, timeout_s=180
    )
    assert (
        len(runs_of(training, request_id)) == 1 and runs_of(training, request_id)[0].source.instance == active
    )

    # a drift about the champion waits for post-drift examples in the active one; it dies
    champion = httpx.get(
        f"{stack.url('registry')}/v1/models/demo/aliases/champion", headers=stack.auth()
    ).json()
    onset = datetime.now(UTC)
    drift = DriftDetected(
        model_name="demo",
        reference_version=champion["version"],
        kind="concept",
        window_start=onset,
        window_end=onset,
        window_size=100,
        onset_time=onset,
        detector="test",
    )
    (drift_id,) = produce(stack, [drift], topics.DRIFT)
    wait_for(
        lambda: (
            (metric := httpx.get(f"{urls[active]}/metrics", timeout=5).text)
            and 'ctloop_trainer_triggers_total{kind="drift",outcome="queued"} 1.0' in metric
        ),
        "the active trainer to queue the drift",
    )
    stack.processes[active].send_signal(signal.SIGKILL)
    stack.processes[active].wait(30)
    killed_at = time.monotonic()
    wait_for(lambda: health(urls[standby]).get("active"), "the standby to take over", 60)
    takeover_s = time.monotonic() - killed_at
    print(f"takeover after SIGKILL of the active trainer: {takeover_s:.1f} s")
    assert takeover_s < 30

    # the post-drift examples arrive: the new active replica runs the drift once
    produce(stack, examples("b", 300, onset + timedelta(seconds=1), seed=2), topics.EXAMPLES)
    training = read_all(
        stack.bootstrap,
        topics.TRAINING,
        lambda es: len(runs_of(es, drift_id)) >= 1,
        quiet_s=10,
        timeout_s=180,
    )
    answered = runs_of(training, drift_id)
    assert len(answered) == 1 and answered[0].source.instance == standby, answered
    started = [
        e for e in training if e.type == "training.started" and e.payload["trigger_event_id"] == drift_id
    ]
    assert len(started) == 1  # the killed replica never started it: no second run, nothing lost
