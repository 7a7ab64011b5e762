"""Console page times on a long history: 1,000 versions (each a whole loop: drift, run,
registration, promotion, swap), 10,000 tested windows, a week of accuracy measurements and
10,000 dead letters in the console's store (SQLite), each page requested in-process (routing,
queries, rendering: the server's time, no network), beside the raw limit of the same page: the
store's queries alone.

    python -m benchmarks.bench_console [--versions N] [--windows N] [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from benchmarks.common import fmt, write_section
from services.console.pages import DRIFT_POINTS, build_app
from services.console.store import ConsoleStore
from shared.events import (
    EVENT_TYPES,
    ColumnHistogram,
    DeadLetter,
    DriftDetected,
    Envelope,
    FeatureDrift,
    ModelPromoted,
    ModelRegistered,
    ModelSwapped,
    Payload,
    QualityMeasured,
    Source,
    TrainingCompleted,
    TrainingStarted,
    WindowTested,
)
from shared.schema import load_schema
from shared.settings import DEFAULT_SCHEMA, ConsoleSettings
from shared.validation import FieldError

DIGEST = "sha256:" + "0" * 64
SOURCE = Source(service="bench", instance="bench")
FEATURES = ["x1", "x2", "x3", "amount", "color"]
BUDGET_MS = 300


def event(payload: Payload, at: datetime, correlation_id: str) -> Envelope:
    return Envelope(
        type=EVENT_TYPES[type(payload)],
        occurred_at=at,
        source=SOURCE,
        correlation_id=correlation_id,
        payload=payload.model_dump(mode="json"),
    )


def loops(versions: int, start: datetime, step: timedelta) -> Iterator[Envelope]:
    """A whole loop per version: drift, run, registration, promotion, swap."""
    for v in range(1, versions + 1):
        at, cid = start + v * step, f"loop-{v}"
        drift = DriftDetected(
            model_name="demo",
            reference_version=v - 1 or None,
            kind="concept",
            window_start=at,
            window_end=at,
            window_size=500,
            onset_time=at,
            detector="page-hinkley",
        )
        yield event(drift, at, cid)
        yield event(
            TrainingStarted(run_id=f"r{v}", model_name="demo", trigger="drift", rows=5000),
            at + timedelta(seconds=1),
            cid,
        )
        done = TrainingCompleted(run_id=f"r{v}", model_name="demo", trigger="drift", version=v)
        yield event(done, at + timedelta(seconds=20), cid)
        metrics = {"accuracy": 0.9, "train_rows": 4000.0, "holdout_rows": 1000.0}
        yield event(
            ModelRegistered(model_name="demo", version=v, digest=DIGEST, metrics=metrics),
            at + timedelta(seconds=21),
            cid,
        )
        promoted = ModelPromoted(
            model_name="demo", version=v, alias="champion", previous_version=v - 1 or None, digest=DIGEST
        )
        yield event(promoted, at + timedelta(seconds=21), cid)
        swapped = ModelSwapped(model_name="demo", version=v, previous_version=v - 1 or None, duration_ms=40.0)
        yield event(swapped, at + timedelta(seconds=23), cid)


def windows(count: int, start: datetime, step: timedelta, rng: random.Random) -> Iterator[Envelope]:
    for i in range(count):
        at = start + i * step
        drifted = rng.random() < 0.02
        features = [
            FeatureDrift(
                feature=f,
                test="ks",
                statistic=rng.random() * 0.2,
                p_value=rng.random(),
                effect=rng.random() * (0.4 if drifted else 0.1),
                drifted=drifted and f == "x3",
                adjusted_p_value=rng.random(),
            )
            for f in FEATURES
        ]
        histograms = [
            ColumnHistogram(
                feature=f,
                edges=[float(e) for e in range(21)],
                reference=[rng.randint(0, 50) for _ in range(20)],
                current=[rng.randint(0, 50) for _ in range(20)],
            )
            for f in FEATURES
        ]
        tested = WindowTested(
            model_name="demo",
            reference_version=1,
            kind="feature",
            window_start=at - step,
            window_end=at,
            size=500,
            drifted=drifted,
            alpha=0.01,
            min_effect=0.1,
            features=features,
            histograms=histograms,
        )
        yield event(tested, at, f"w-{i}")


def measurements(count: int, start: datetime, step: timedelta, rng: random.Random) -> Iterator[Envelope]:
    for i in range(count):
        at = start + i * step
        labelled = rng.randint(20, 60)
        measured = QualityMeasured(
            model_name="demo",
            model_version=1,
            labelled=labelled,
            correct=int(labelled * 0.9),
            first_event_time=at,
            last_event_time=at,
        )
        yield event(measured, at, f"q-{i}")


def dead_letters(count: int, start: datetime, step: timedelta) -> Iterator[Envelope]:
    for i in range(count):
        letter = DeadLetter.of(
            "ctloop.raw.v1", [FieldError(index=0, field="x1", reason=f"not a number (kind {i % 7})")], "{}"
        )
        yield event(letter, start + i * step, f"d-{i}")


def fill(store: ConsoleStore, versions: int, window_count: int, now: datetime) -> None:
    rng = random.Random(1)
    week = timedelta(days=7)
    start = now - week
    batch: list[Envelope] = []
    sources = (
        loops(versions, start, week / (versions + 1)),
        windows(window_count, start, week / window_count, rng),
        measurements(7 * 24 * 60, start, timedelta(minutes=1), rng),  # one a minute for a week
        dead_letters(10_000, now - timedelta(hours=23), timedelta(seconds=8)),
    )
    for source in sources:
        for envelope in source:
            batch.append(envelope)
            if len(batch) == 2000:
                store.add(batch)
                batch = []
    store.add(batch)


def timed(call: Callable[[], object], runs: int) -> list[float]:
    call()  # warm: templates compiled, SQLite pages cached
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, nothing written")
    args = parser.parse_args(argv)
    if args.quick:
        args.versions, args.windows, args.runs = 20, 200, 3
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-console-") as folder:
        store = ConsoleStore(f"sqlite:///{Path(folder) / 'console.db'}")
        started = time.perf_counter()
        fill(store, args.versions, args.windows, now)
        filled_s = time.perf_counter() - started
        # nothing listens on port 9: the overview's call to the monitor is refused at once
        settings = ConsoleSettings(monitor_url="http://127.0.0.1:9", registry_url="http://127.0.0.1:9")
        calls = httpx.Client()
        client = TestClient(build_app(settings, load_schema(DEFAULT_SCHEMA), store, calls))
        window_id = store.windows_list(1)[0].event_id
        pages: dict[str, tuple[str, Callable[[], object]]] = {
            "overview": (
                "/",
                lambda: (
                    store.latest(["model.promoted"], 50),
                    store.quality_since(now.timestamp() - 6 * 3600),
                ),
            ),
            "loops": ("/loops", lambda: store.loop_events(store.loop_ids(0, 50)[0])),
            "one loop": (
                f"/loops/loop-{args.versions}",
                lambda: store.loop_events([f"loop-{args.versions}"]),
            ),
            "models": (
                "/models",
                lambda: (
                    store.of_types(["model.registered"]),
                    store.of_types(["model.promoted"]),
                    store.of_types(["model.swapped"]),
                ),
            ),
            "drift": (
                "/drift",
                lambda: (
                    store.feature_series("feature", DRIFT_POINTS),
                    store.of_types(["drift.detected"]),
                    store.windows_list(30),
                ),
            ),
            "one window": (f"/drift/windows/{window_id}", lambda: store.event(window_id)),
            "quality (a week)": (
                "/quality?hours=168",
                lambda: (
                    store.quality_since(now.timestamp() - 7 * 86400),
                    store.of_types(["drift.detected", "model.swapped"]),
                ),
            ),
            "dead letters": (
                "/dead-letters",
                lambda: (
                    store.latest_dead_letters(100),
                    store.dead_letter_reasons(30),
                    store.dead_letter_counts(now.timestamp() - 86400, 300),
                ),
            ),
        }
        rows = []
        for name, (path, queries) in pages.items():
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            page_ms = timed(lambda path=path: client.get(path), args.runs)  # type: ignore[misc]
            query_ms = timed(queries, args.runs)
            rows.append((name, path, page_ms, query_ms, len(response.content)))
        client.close()
        calls.close()
        store.close()

    lines = [
        f"History: {args.versions:,} versions (6 events each), {args.windows:,} tested windows (5 columns, "
        f"histograms of 20 bins), {7 * 24 * 60:,} accuracy measurements, 10,000 dead letters; filled in "
        f"{filled_s:.1f} s. Each page requested {args.runs} times in-process after one warm-up (routing, "
        "queries and rendering: the server's time); beside it the raw limit, the page's store queries "
        f"alone. Goal: under {BUDGET_MS} ms.",
        "",
        "| page | server time, ms | store queries alone, ms | page / queries | page size |",
        "|---|---|---|---|---|",
    ]
    for name, path, page_ms, query_ms, size in rows:
        ratio = sorted(p / max(q, 1e-6) for p, q in zip(page_ms, query_ms, strict=True))[len(page_ms) // 2]
        route = re.sub(r"/(loop-\d+|[0-9a-f-]{36})$", "/{id}", path.split("?")[0])
        lines.append(
            f"| {name} (`{route}`) | {fmt(page_ms, digits=1)} | {fmt(query_ms, digits=1)} "
            f"| {ratio:.1f}x | {size / 1024:,.0f} KiB |"
        )
    report = "\n".join(lines)
    print(report)
    if not args.quick:
        write_section("Console pages", report)


if __name__ == "__main__":
    main()
