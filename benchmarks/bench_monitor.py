"""Drift-detection quality of the monitor's decision logic (the code its faust agents call),
on seeded streams:

- false alarms on a stationary stream of 100,000 records (feature windows and error stream);
- records from a 0.5-standard-deviation mean shift in one of 10 features to the alarm;
- records from a label-only concept change to the alarm, labels arriving 50 records late;

each with one worker and with three (the records split over them as Kafka's partitions split
them among faust workers: each worker keeps its own feature windows and alarms on its own; the
outcomes each joins go to the one worker that judges the error stream, arriving in another
order than the records').

    python -m benchmarks.bench_monitor [--seeds N] [--quick]
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from benchmarks.common import bench_version, fmt, seeded_arguments, write_section
from services.monitor.state import MonitorState
from shared.registry_api import ReferenceProfile
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings

FEATURES = [f"f{i}" for i in range(10)]
SCHEMA = DatasetSchema.model_validate(
    {
        "name": "bench",
        "label": {"classes": [0, 1]},
        "features": [{"name": f, "type": "numeric"} for f in FEATURES],
    }
)
T0 = datetime(2026, 11, 21, tzinfo=UTC)


def monitor(seed: int, accuracy: float = 0.92, window: int = 500) -> MonitorState:
    rng = random.Random(seed)
    sample = {f: [rng.gauss(0, 1) for _ in range(1000)] for f in FEATURES}
    # No cooldown: the benchmark re-arms after every alarm to count them all.
    settings = MonitorSettings(monitor_cooldown_s=0, monitor_window=window)
    state = MonitorState(settings, SCHEMA)
    state.set_reference(bench_version(SCHEMA, ReferenceProfile(sample=sample, validation_accuracy=accuracy)))  # type: ignore[arg-type]
    return state


REORDER = 30
"""Outcomes a joining worker's hop to the judge may fall behind by (records)."""


def worker_of(i: int, workers: int) -> int:
    """The worker that sees record `i`: its partition (records are keyed by id, spread evenly)."""
    return (i * 2654435761) % 2**32 % workers


def feature_alarms(
    seed: int,
    records: int,
    shift_at: int | None = None,
    shift: float = 0.5,
    workers: int = 1,
    window: int = 500,
) -> list[int]:
    states = [monitor(seed, window=window) for _ in range(workers)]
    rng, alarms = random.Random(seed + 1000), []
    for i in range(records):
        row = {
            f: rng.gauss(shift if shift_at is not None and i >= shift_at and f == "f3" else 0.0, 1)
            for f in FEATURES
        }
        state = states[worker_of(i, workers)]
        if state.observe_features(row, T0 + timedelta(seconds=i)) is not None:
            alarms.append(i)
            state.set_reference(state.reference)  # type: ignore[arg-type]  # re-arm: count every alarm
    return alarms


def error_alarms(
    seed: int,
    records: int,
    change_at: int | None = None,
    delay: int = 50,
    workers: int = 1,
) -> list[int]:
    """Alarms (as the record index at which the label arrived) on the 0/1 error stream.

    With several workers each outcome reaches the judging worker after its joining worker's
    own hop (up to `REORDER` records late): the judge sees every outcome, in another order."""
    judge = monitor(seed)
    rng, jitter, alarms = random.Random(seed + 2000), random.Random(seed + 3000), []
    arriving = []
    for i in range(records):
        accuracy = 0.5 if change_at is not None and i >= change_at else 0.92
        late = 0 if workers == 1 else jitter.randrange(REORDER)
        arriving.append((i + late, i, rng.random() < accuracy))
    for _, i, correct in sorted(arriving):
        if judge.observe_outcome(correct, T0 + timedelta(seconds=i)) is not None:
            alarms.append(i + delay)  # the label of record i arrives `delay` records later
            judge.set_reference(judge.reference)  # type: ignore[arg-type]
    return alarms


def main(argv: list[str] | None = None) -> None:
    seeds, stationary_n, quick = seeded_arguments(__doc__, argv, 100_000, 5_000)
    change = 10_000
    rows = []
    early = 0
    for workers, window in ((1, 500), (3, 500), (3, 167)):
        false_features = [
            float(len(feature_alarms(s, stationary_n, workers=workers, window=window))) for s in seeds
        ]
        false_errors = [float(len(error_alarms(s, stationary_n, workers=workers))) for s in seeds]
        shift_runs = [
            feature_alarms(s, change + 5_000, change, workers=workers, window=window) for s in seeds
        ]
        concept_runs = [error_alarms(s, change + 5_000, change, workers=workers) for s in seeds]
        shift_delays = [float(next((a - change for a in run if a >= change), 5_000)) for run in shift_runs]
        concept_delays = [
            float(next((a - change for a in run if a >= change), 5_000)) for run in concept_runs
        ]
        early += sum(any(a < change for a in run) for run in shift_runs + concept_runs)
        name = ("1 worker" if workers == 1 else f"{workers} workers") + f", windows {window}"
        rows += [
            (
                f"{name}: false alarms, feature windows, {stationary_n:,} stationary records",
                false_features,
                "none",
            ),
            (
                f"{name}: false alarms, error stream, {stationary_n:,} stationary labels (92% accurate)",
                false_errors,
                "none",
            ),
            (
                f"{name}: records from a 0.5 sd shift of one feature to the alarm",
                shift_delays,
                "<= 1,000 (2 windows of 500)",
            ),
            (
                f"{name}: records from a label-only change (92% -> 50%) to the alarm, labels 50 late",
                concept_delays,
                "< 200",
            ),
        ]
    table = "\n".join(f"| {name} | {fmt(values)} | {goal} |" for name, values, goal in rows)
    body = f"""
What: the monitor's decision logic (`services/monitor/state.py`, what the faust agents call)
with its default settings (windows of 500, BH at 0.01, effect >= 0.1, Page-Hinkley delta 0.05
and threshold 15, proportion test) on seeded synthetic streams; {len(seeds)} seeds each.
Reference: 1,000 rows of 10 independent N(0, 1) features; validation accuracy 0.92.

| measurement | median (min, max, n) | goal |
|---|---|---|
{table}

Alarms before the change in the change runs: {early} of {6 * len(seeds)} runs. With several
workers each keeps windows of its own partitions' records, so a window of 500 fills N times
slower in stream records: a feature shift is seen later. Windows of 500 / N
(`CTLOOP_MONITOR_WINDOW`) fill at the one-worker pace, at some cost in power per window (the
third block). The error stream is not split: each worker sends the outcomes it joins to
`ctloop.outcomes.v1` (one partition), and the one worker holding it judges them all, in an
order up to {REORDER} records off the records' (modelled here): one concept-drift decision per
episode, from every label, whatever N. Every worker that sees a feature shift alarms (once per
episode, by its alarm policy), and the trainer merges those alarms into one run (the
scale-out test lists them as merged).
Throughput per faust worker: the "Monitor throughput" section (bench_monitor_throughput).
"""
    print(body)
    if not quick:
        write_section("Drift detection quality", body)


if __name__ == "__main__":
    main()
