"""Drives the demo stream through a running stack and reports what the loop did.

Cold start first: labelled records through ingest until the trainer has made a champion and
serving answers. Then the stream: predictions through serving, their labels through ingest
`label_delay` records later, as in real life. The concept changes at a known record; the
driver keeps streaming until serving answers with a model trained after the drift, then a
while longer to measure the recovered accuracy. Lifecycle events on `drift`, `training` and
`models` are printed as they happen.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, Field

from services.demo.stream import ConceptStream, RecordStream, StreamKind
from services.supervisor import SERVICES, Stack
from shared import topics
from shared.events import BadEvent, Envelope
from shared.kafka import make_consumer
from shared.settings import CommonSettings


class DemoConfig(BaseModel):
    seed: int = 7
    stream: StreamKind = "abrupt"
    """What changes at `drift_at` (see services/demo/stream.py)."""
    warmup: int = 1200
    """Labelled records sent through ingest for the first model (cold start)."""
    drift_at: int = 3000
    """Streamed records (after the warm-up) before the concept changes."""
    rate: float = 300.0
    """Records per second through serving."""
    batch: int = 20
    """Records per prediction request."""
    label_delay: int = 50
    """Labels arrive this many records after their prediction."""
    after_swap: int = 1000
    """Records to stream after the swap, to measure the recovered accuracy."""
    length: int | None = None
    """Stream exactly this many records (after the warm-up), swap or not, instead of stopping
    `after_swap` records after the swap: for streams where nothing, or more than one thing,
    is to be answered."""
    timeout_s: float = 300.0
    """Give up (the loop did not close) after this long."""


class DemoReport(BaseModel):
    closed: bool
    reason: str = ""
    first_version: int | None = None
    new_version: int | None = None
    accuracy_before: float | None = None
    accuracy_just_after: float | None = None
    accuracy_after_swap: float | None = None
    drift_to_swap_records: int | None = None
    drift_to_swap_seconds: float | None = None
    onset_estimate_record: int | None = None
    """The record the monitor's drift event placed the change at (the truth: `drift_at`)."""
    drift_record: int | None = None
    failed_requests: int = 0
    versions_seen: list[int] = []
    alarms: list[tuple[int, str]] = []
    """(record index being served when it was raised, kind) of every drift event."""
    trace: list[str] = []
    """The lifecycle events of the loop that closed, all with its correlation id."""
    outcomes: list[tuple[int, int, bool]] = Field(default_factory=list, exclude=True)
    """(record index, version that answered, right?) per streamed record, for benchmarks."""

    @property
    def recovered(self) -> bool:
        return (
            self.accuracy_after_swap is not None
            and self.accuracy_just_after is not None
            and self.accuracy_after_swap >= self.accuracy_just_after + 0.1
        )


@dataclass
class _Served:
    index: int
    version: int
    correct: bool
    at: float
    wall: datetime


@dataclass
class EventWatcher:
    """Prints lifecycle events and keeps them for the trace."""

    bootstrap: str
    say: Callable[[str], None]
    start: float = field(default_factory=time.monotonic)
    events: list[Envelope] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        settings = CommonSettings(kafka_bootstrap=self.bootstrap)
        consumer = make_consumer(
            settings, f"ctloop-demo-{uuid.uuid4().hex[:8]}", [topics.DRIFT, topics.TRAINING, topics.MODELS]
        )
        try:
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=300).values():
                    for message in batch:
                        try:
                            event = Envelope.decode(message.value)
                        except BadEvent:
                            continue
                        self.events.append(event)
                        self.say(f"[{time.monotonic() - self.start:6.1f}s] {describe(event)}")
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()


def describe(event: Envelope) -> str:
    p, corr = event.payload, event.correlation_id[:8]
    if event.type == "drift.detected":
        if p["kind"] == "concept":
            what = f"error rate {p['error_rate']:.2f} (validation accuracy {p['baseline_accuracy']:.2f})"
        else:
            what = ", ".join(
                f"{f['feature']} {f['test']}={f['statistic']:.3g} p={f['p_value']:.1e} "
                f"effect={f['effect']:.2f}"
                for f in p["features"]
                if f["drifted"]
            )
            if p.get("estimated_accuracy") is not None:
                what += (
                    f"; estimated accuracy {p['estimated_accuracy']:.2f} "
                    f"(holdout {p['baseline_accuracy']:.2f}, no labels)"
                )
        return (
            f"DRIFT detected ({p['kind']}, {p['detector']}): {what}; window of {p['window_size']}, "
            f"reference v{p['reference_version']}  [loop {corr}]"
        )
    if event.type.startswith("training."):
        extra = ""
        if event.type == "training.started":
            extra = f"{p['trigger']}, {p['rows']} examples"
        elif event.type == "training.completed":
            extra = f"v{p['version']}, holdout accuracy {p['metrics'].get('accuracy', 0):.3f}"
        else:
            extra = f"gate {p['failed_gate']}: {p['reason']}"
        return f"TRAINING {event.type.split('.')[1]:<9} {p['run_id']} ({extra})  [loop {corr}]"
    if event.type == "model.registered":
        accuracy = p["metrics"].get("accuracy", 0)
        return f"REGISTRY registered v{p['version']} accuracy {accuracy:.3f}  [loop {corr}]"
    if event.type == "model.promoted":
        return (
            f"REGISTRY promoted v{p['version']} to {p['alias']} (was v{p['previous_version']})  [loop {corr}]"
        )
    if event.type == "model.swapped":
        return (
            f"SERVING swapped v{p['previous_version']} -> v{p['version']} in {p['duration_ms']:.0f} ms"
            f"  [loop {corr}]"
        )
    if event.type == "model.swap_failed":
        return f"SERVING refused v{p['version']}: {p['reason']}  [loop {corr}]"
    return event.type


def _accuracy(rows: list[_Served]) -> float | None:
    return sum(r.correct for r in rows) / len(rows) if rows else None


def run_demo(
    stack: Stack, config: DemoConfig, say: Callable[[str], None] = print, stream: RecordStream | None = None
) -> DemoReport:
    """Drive the demo stream (or `stream`, records of the stack's schema) through a running
    stack (ingest's writes with its producer's token) and report what the loop did."""
    urls, producer_token = {s: stack.url(s) for s in SERVICES}, stack.token("producer")
    watcher = EventWatcher(stack.bootstrap, say)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        if stream is None:
            stream = ConceptStream(
                seed=config.seed, drift_at=config.warmup + config.drift_at, kind=config.stream
            )
        return _drive(urls, config, say, watcher, producer_token, stream)
    finally:
        watcher.stop()
        thread.join(5)


def _drive(
    urls: dict[str, str],
    config: DemoConfig,
    say: Callable[[str], None],
    watcher: EventWatcher,
    token: str,
    stream: RecordStream,
) -> DemoReport:
    drift_index = config.warmup + config.drift_at
    deadline = time.monotonic() + config.timeout_s
    http = httpx.Client(timeout=30.0, headers={"Authorization": f"Bearer {token}"} if token else {})
    say(f"cold start: {config.warmup} labelled records through ingest")
    for done in range(0, config.warmup, 200):
        batch = [{**r, "label": y} for r, y in stream.take(min(200, config.warmup - done))]
        http.post(f"{urls['ingest']}/v1/records", json={"records": batch}).raise_for_status()
    while http.get(f"{urls['serving']}/healthz").status_code != 200:
        if time.monotonic() > deadline:
            return DemoReport(closed=False, reason="no first model within the time limit")
        time.sleep(0.5)
    first = http.get(f"{urls['serving']}/healthz").json()["model_version"]
    say(
        f"serving v{first}; streaming {config.rate:.0f} records/s, labels {config.label_delay} "
        f"records late; the {config.stream} stream changes at record {drift_index}"
    )

    served: list[_Served] = []
    labels: deque[dict[str, object]] = deque()
    failed = 0
    drift_at_time: float | None = None
    drift_wall: datetime | None = None
    swap: _Served | None = None
    start = time.monotonic()
    sent = 0
    while time.monotonic() < deadline:
        size = config.batch if config.length is None else min(config.batch, config.length - sent)
        items = list(stream.take(size))
        if stream.index > drift_index and drift_at_time is None:
            drift_at_time, drift_wall = time.monotonic(), datetime.now(UTC)
            at = f"[{drift_at_time - watcher.start:6.1f}s]"
            say(f"{at} the {config.stream} stream changes now (record {drift_index})")
        response = http.post(f"{urls['serving']}/v1/predict", json={"records": [r for r, _ in items]})
        if response.status_code != 200:
            failed += 1
            continue
        now, wall = time.monotonic(), datetime.now(UTC)
        for (record, label), out in zip(items, response.json()["predictions"], strict=True):
            index = int(record["id"].rsplit("-", 1)[1])
            row = _Served(index, out["model_version"], out["prediction"] == label, now, wall)
            served.append(row)
            if (
                swap is None
                and drift_wall
                and index >= drift_index
                and row.version >= answer(watcher, drift_wall)
            ):
                swap = row  # to know when to stop (`_report` places it exactly, all events in)
            labels.append({"id": record["id"], "label": label})
        due = [labels.popleft() for _ in range(max(0, len(labels) - config.label_delay))]
        if due:
            http.post(f"{urls['ingest']}/v1/labels", json={"labels": due}).raise_for_status()
        sent += len(items)
        if config.length is not None:
            if sent >= config.length:
                break
        elif swap is not None and sum(1 for r in served if r.index >= swap.index) >= config.after_swap:
            break
        pause = start + sent / config.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    http.close()
    time.sleep(0.5)  # let the watcher print the last events
    return _report(served, first, swap, drift_index, drift_at_time, failed, watcher)


def answer(watcher: EventWatcher, drift_at: datetime) -> float:
    """The version of the first model a drift event's run made after `drift_at` (its refreshes
    are newer); infinity while there is none. A refresh of the model from before the drift,
    promoted after it, is no answer to the drift."""
    versions = [
        int(e.payload["version"])
        for e in list(watcher.events)
        if e.type == "training.completed"
        and e.payload.get("trigger") == "drift"
        and e.payload.get("version")
        and e.occurred_at >= drift_at
    ]
    return min(versions, default=math.inf)


def _first_new_model(served: list[_Served], drift_index: int, watcher: EventWatcher) -> _Served | None:
    """The first answer after the drift by a model trained for it (see `answer`)."""
    drift_at = next((r.wall for r in served if r.index >= drift_index), None)
    if drift_at is None:
        return None
    version = answer(watcher, drift_at)
    return next((r for r in served if r.index >= drift_index and r.version >= version), None)


def _report(
    served: list[_Served],
    first: int,
    swap: _Served | None,
    drift_index: int,
    drift_at_time: float | None,
    failed: int,
    watcher: EventWatcher,
) -> DemoReport:
    report = DemoReport(
        closed=swap is not None,
        drift_record=drift_index,
        first_version=first,
        failed_requests=failed,
        versions_seen=sorted({r.version for r in served}),
        accuracy_before=_accuracy([r for r in served if drift_index - 1000 <= r.index < drift_index]),
        outcomes=[(r.index, r.version, r.correct) for r in served],
        alarms=[
            (next((r.index for r in served if r.wall >= e.occurred_at), served[-1].index), e.payload["kind"])
            for e in list(watcher.events)
            if e.type == "drift.detected" and served
        ],
    )
    if swap is None:
        report.reason = "no model trained after the drift was served within the time limit"
        report.accuracy_just_after = _accuracy([r for r in served if r.index >= drift_index])
        return report
    swap = _first_new_model(served, drift_index, watcher) or swap
    report.new_version = swap.version
    report.accuracy_just_after = _accuracy([r for r in served if drift_index <= r.index < swap.index])
    report.accuracy_after_swap = _accuracy([r for r in served if r.index >= swap.index])
    report.drift_to_swap_records = swap.index - drift_index
    report.drift_to_swap_seconds = round(swap.at - (drift_at_time or swap.at), 2)
    swapped = [
        e for e in watcher.events if e.type == "model.swapped" and e.payload["version"] == swap.version
    ]
    if swapped:
        loop = swapped[0].correlation_id
        report.trace = [describe(e) for e in watcher.events if e.correlation_id == loop]
        drifts = [e for e in watcher.events if e.correlation_id == loop and e.type == "drift.detected"]
        if drifts:
            onset = datetime.fromisoformat(drifts[0].payload["onset_time"])
            after = [r.index for r in served if r.wall >= onset]
            report.onset_estimate_record = after[0] if after else None
    return report
