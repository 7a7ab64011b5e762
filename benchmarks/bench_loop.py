"""The whole loop on a stream with an abrupt concept drift, beside what else one could run on
the same stream: (a) the first model, never retrained; (b) River's Adaptive Random Forest
and Hoeffding Adaptive Tree, learning online; (c) retraining every N records on the last
1,000 labelled ones; (d) an oracle with ctloop's data rules that knows where the drift is and
trains instantly.

ctloop runs as five processes on the embedded broker, driven by the demo (`ctloop demo`):
a labelled warm-up for the first model, then records through serving at 300/s with labels
50 records late, the concept changing at a known record. The baselines replay the same
records offline in the same order, with the same label delay and the same first training set
(the warm-up) and estimator. Accuracy is prequential (each record predicted before its label
is known), over the same index ranges for every method: the last 1,000 before the drift, from
the drift to ctloop's first new model (the first answer by the model of a drift-triggered run,
or of its refreshes), the first 1,000 after the drift, after that model, and everything.

    python -m benchmarks.bench_loop [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RssSampler, bench_stack, fmt, rss_mib, write_section
from benchmarks.peers import peer_python
from services.demo.driver import DemoConfig, DemoReport, run_demo
from services.demo.stream import ConceptStream
from services.supervisor import SERVICES
from services.trainer.pipeline import build_pipeline, make_estimator
from shared.features import encode_features
from shared.schema import load_schema
from shared.settings import TrainerSettings

PERIODIC_WINDOW = 1000


def ctloop(config: DemoConfig) -> tuple[DemoReport, dict[str, float], dict[str, float]]:
    """The demo on a fresh stack; with RSS (MiB) per process idle and at its peak under load."""
    with bench_stack(SERVICES) as stack:
        pids = {name: process.pid for name, process in stack.processes.items()}
        if stack.broker is not None:
            pids["broker (Tansu)"] = stack.broker.process.pid
        idle = {name: rss_mib(pid) for name, pid in pids.items()}
        idle["whole stack"] = sum(idle.values())
        sampler = RssSampler(pids)
        sampler.start()
        try:
            report = run_demo(stack, config, say=lambda _: None)
        finally:
            sampler.done.set()
            sampler.join(5)
        return report, idle, {**sampler.peak, "whole stack": sampler.peak_total}


def replay(config: DemoConfig, streamed: int) -> tuple[list[dict], list[int]]:
    """The demo's records and labels, warm-up first, in the order it sent them."""
    stream = ConceptStream(seed=config.seed, drift_at=config.warmup + config.drift_at)
    pairs = list(stream.take(config.warmup + streamed))
    return [r["features"] for r, _ in pairs], [y for _, y in pairs]


def fit(rows: list[dict], labels: list[int]) -> object:
    settings = TrainerSettings()
    schema = load_schema(settings.schema_path)
    model = build_pipeline(
        schema, make_estimator(settings.trainer_estimator, settings.trainer_estimator_params)
    )
    model.fit(encode_features(schema, rows), labels)
    return model


def predict(model: object, rows: list[dict]) -> np.ndarray:
    schema = load_schema(TrainerSettings().schema_path)
    return model.predict(encode_features(schema, rows))  # type: ignore[attr-defined]


def static(config: DemoConfig, rows: list[dict], labels: list[int]) -> list[bool]:
    w = config.warmup
    model = fit(rows[:w], labels[:w])
    return (predict(model, rows[w:]) == np.asarray(labels[w:])).tolist()


def periodic(
    config: DemoConfig, rows: list[dict], labels: list[int], every: int
) -> tuple[list[bool], list[int]]:
    """Retrain every `every` streamed records on the last labelled ones; (outcomes, retrain points)."""
    w, delay = config.warmup, config.label_delay
    model, correct, retrains = fit(rows[:w], labels[:w]), [], []
    for start in range(0, len(rows) - w, every):
        if start > 0:
            known = w + start - delay  # labels of records before this one have arrived
            model = fit(
                rows[max(0, known - PERIODIC_WINDOW) : known], labels[max(0, known - PERIODIC_WINDOW) : known]
            )
            retrains.append(start)
        chunk = slice(w + start, min(len(rows), w + start + every))
        correct += (predict(model, rows[chunk]) == np.asarray(labels[chunk])).tolist()
    return correct, retrains


def oracle(config: DemoConfig, rows: list[dict], labels: list[int]) -> tuple[list[bool], list[int]]:
    """ctloop's data rules with perfect knowledge: the first model until the true drift, then a
    model of the post-drift examples as soon as `trainer_min_post_drift` of them are labelled,
    refit each time they grow by `trainer_refresh_factor`, instantly; (outcomes, refit points)."""
    settings = TrainerSettings()
    w, delay, drift = config.warmup, config.label_delay, config.warmup + config.drift_at
    size, points = settings.trainer_min_post_drift, [drift]
    while size < settings.trainer_max_examples:  # refit where `size` post-drift labels are known
        points.append(drift + delay + size)
        size = math.ceil(size * max(settings.trainer_refresh_factor, 1.01))
    points = [p for p in points if p < len(rows)] + [len(rows)]
    model, correct, refits = fit(rows[:w], labels[:w]), [], []
    correct += (predict(model, rows[w:drift]) == np.asarray(labels[w:drift])).tolist()
    for start, end in itertools.pairwise(points):
        if start > drift:
            known = start - delay
            model = fit(rows[drift:known], labels[drift:known])
            refits.append(start - w)
        correct += (predict(model, rows[start:end]) == np.asarray(labels[start:end])).tolist()
    return correct, refits


def river(model: str, config: DemoConfig, rows: list[dict], labels: list[int]) -> list[bool]:
    """River's `model` (arf, hat) test-then-train on the same stream, in .venv-peers/river."""
    python = peer_python("river")
    if python is None:
        raise RuntimeError("River is not installed: run `make peers`")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for x, y in zip(rows, labels, strict=True):
            f.write(json.dumps({"features": x, "label": y}) + "\n")
    script = Path(__file__).parent / "peers" / "river_online.py"
    options = ["--model", model, "--warmup", str(config.warmup), "--label-delay", str(config.label_delay)]
    out = subprocess.run(
        [str(python), str(script), f.name, *options, "--seed", str(config.seed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    Path(f.name).unlink()
    return [line == "1" for line in out.split()]


def accuracy(outcomes: list[bool], low: int, high: int) -> float:
    part = outcomes[low:high]
    return sum(part) / len(part) if part else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one short run, no RESULTS.md (smoke test)")
    args = parser.parse_args(argv)
    configs = [DemoConfig(seed=7 + i) for i in range(args.runs)]
    if args.quick:
        configs = [DemoConfig(warmup=1000, drift_at=1000, after_swap=200)]
    rows_out: dict[str, list[list[float]]] = {}
    comparisons: list[dict[str, float]] = []
    memory: dict[str, list[tuple[float, float]]] = {}
    for run, config in enumerate(configs):
        report, idle, loaded = ctloop(config)
        for name in idle:
            memory.setdefault(name, []).append((idle[name], loaded[name]))
        if not report.closed or report.drift_to_swap_records is None:
            raise RuntimeError(f"the loop did not close in run {run + 1}: {report.reason}")
        ordered = sorted(report.outcomes)
        streamed = ordered[-1][0] + 1 - config.warmup
        ours = [False] * streamed
        for index, _, right in ordered:
            ours[index - config.warmup] = right
        rows, labels = replay(config, streamed)
        drift = config.drift_at
        swap = drift + report.drift_to_swap_records
        retrains = max(1, len(report.versions_seen) - 1)
        # as many retrains within the streamed records as ctloop made: at N, 2N, ... R*N
        same_every = streamed // (retrains + 1)
        methods = {
            "ctloop (drift-triggered retraining)": ours,
            "static model, never retrained": static(config, rows, labels),
            "River ARF, online": river("arf", config, rows, labels),
            "River Hoeffding Adaptive Tree, online": river("hat", config, rows, labels),
        }
        periodic_same, points_same = periodic(config, rows, labels, same_every)
        methods["oracle: ctloop's data rules at the true drift, instantly"] = oracle(config, rows, labels)[0]
        for every in (500, 1000, 2000):
            methods[f"retrain every {every} records"] = periodic(config, rows, labels, every)[0]
        methods["retrain every N, as many retrains as ctloop"] = periodic_same
        for name, outcomes in methods.items():
            rows_out.setdefault(
                name.split(" (")[0] if name.startswith("retrain every N") else name, []
            ).append(
                [
                    accuracy(outcomes, drift - 1000, drift),
                    accuracy(outcomes, drift, swap),
                    accuracy(outcomes, drift, drift + 1000),
                    accuracy(outcomes, swap, streamed),
                    accuracy(outcomes, 0, streamed),
                ]
            )
        first_after = next((p for p in points_same if p >= drift), None)
        others_after = [accuracy(o, swap, streamed) for n, o in methods.items() if not n.startswith("ctloop")]
        comparisons.append(
            {
                "swap_records": report.drift_to_swap_records,
                "swap_seconds": report.drift_to_swap_seconds or float("nan"),
                "periodic_records": (first_after - drift) if first_after is not None else float("nan"),
                "periodic_expected": same_every / 2,
                "after_gap": accuracy(ours, swap, streamed) - max(others_after),
                "first_1000_vs_arf": accuracy(ours, drift, drift + 1000)
                - accuracy(methods["River ARF, online"], drift, drift + 1000),
                "retrains": retrains,
            }
        )
        print(f"run {run + 1}: " + json.dumps(comparisons[-1]), flush=True)

    def pct(values: list[float]) -> str:
        return f"{100 * statistics.median(values):.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"

    table = "\n".join(
        f"| {name} | " + " | ".join(pct([r[phase] for r in runs]) for phase in range(5)) + " |"
        for name, runs in rows_out.items()
    )
    memory_table = "\n".join(
        f"| {name} | {fmt([i for i, _ in values], '', 0)} | {fmt([p for _, p in values], '', 0)} |"
        for name, values in memory.items()
    )
    after = [c["periodic_records"] for c in comparisons if c["periodic_records"] == c["periodic_records"]]
    periodic_first = (
        f"first retrained {fmt(after, ' records')} after the drift"
        if len(after) == len(comparisons)
        else f"retrained after the drift in {len(after)} of {len(comparisons)} runs (others: before it)"
    )
    periodic_wait = fmt([c["periodic_expected"] for c in comparisons], " records")
    swap_records = fmt([c["swap_records"] for c in comparisons], " records")
    swap_seconds = fmt([c["swap_seconds"] for c in comparisons], " s", 1)
    body = f"""
What: {len(configs)} runs (seeds {", ".join(str(c.seed) for c in configs)}) of the demo stream: a
labelled warm-up of {configs[0].warmup}, then records at 300/s through serving with labels
{configs[0].label_delay} records late; the label rule changes (and x3 shifts) after
{configs[0].drift_at} streamed records. ctloop runs as five processes on the embedded broker;
the baselines replay the same records offline with the same label delay, first training set
and estimator. Prequential accuracy, median (min-max) over the runs, on the same index ranges:

| method | last 1,000 before | drift → new model | first 1,000 after | after the new model | all streamed |
|---|---|---|---|---|---|
{table}

Drift to the first prediction by a new model (ctloop):
{swap_records}, {swap_seconds}. Periodic retraining with as many
retrains over the streamed records as ctloop made ({fmt([c["retrains"] for c in comparisons])}: every
N = streamed / (retrains + 1) records) {periodic_first} on these streams, and would
wait {periodic_wait} after a drift on average over drift positions (N / 2), whatever
the data says.
ctloop's accuracy after its new model minus the best other method's:
{fmt([100 * c["after_gap"] for c in comparisons], " points", 1)} (goal: no worse than -0.5); over the
first 1,000 records after the drift, minus River ARF's:
{fmt([100 * c["first_1000_vs_arf"] for c in comparisons], " points", 1)} (goal: at least 0).

Resident memory (RSS, MiB) of each service of the stack with its child processes (the trainer's
fit process), idle (ready, before the demo) and at
its peak during the demo run (warm-up ingest, 300 predictions/s, labels, a retraining and a
swap); median (min, max) over the runs:

| process | idle | peak under load |
|---|---|---|
{memory_table}
"""
    print(body)
    if not args.quick:
        write_section("The loop", body)


if __name__ == "__main__":
    main()
