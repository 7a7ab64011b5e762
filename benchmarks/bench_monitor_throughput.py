"""Monitor throughput per faust worker: records/s through the full monitor (join table,
feature and prediction windows, drift tests) beside a bare faust agent that only parses the
same envelopes, both reading the same pre-filled `records` topic on the embedded broker,
both pinned to one core, in the same run.

    python -m benchmarks.bench_monitor_throughput [--records N] [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml

from benchmarks.common import bench_stack, fitted_artifact, fmt, register, write_section
from services.supervisor import Stack
from shared import topics
from shared.events import Source, new_event
from shared.kafka import make_producer
from shared.registry_api import ReferenceProfile
from shared.schema import DatasetSchema
from shared.settings import CommonSettings
from shared.validation import Record

TOKEN = "bench-monitor-token-0123456789"
FEATURES = [f"f{i}" for i in range(10)]
SCHEMA = {
    "name": "bench",
    "label": {"classes": [0, 1]},
    "features": [{"name": f, "type": "numeric"} for f in FEATURES],
}
T0 = datetime(2026, 11, 21, tzinfo=UTC)


def fill_records(bootstrap: str, count: int) -> None:
    rng = random.Random(1)
    producer = make_producer(CommonSettings(kafka_bootstrap=bootstrap))
    source = Source(service="bench", instance="bench")
    for i in range(count):
        record = Record(
            id=f"r-{i:08d}",
            event_time=T0 + timedelta(seconds=i),
            features={f: rng.gauss(0, 1) for f in FEATURES},
        )
        producer.send(
            topics.RECORDS, new_event("record.accepted", record, source).encode(), record.id.encode()
        )
    producer.flush(120)
    producer.close()


def bare_rate(stack: Stack, count: int) -> float:
    result = Path(stack.env["CTLOOP_DATA_DIR"]) / "bare-rate.txt"
    env = {**stack.env, "BENCH_EXPECT": str(count), "BENCH_RESULT": str(result)}
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.faust_bare", "worker", "-l", "warn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if not result.exists():
        raise RuntimeError(
            f"the bare faust agent reported no rate:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        )
    return float(result.read_text())


def processed(client: httpx.Client, url: str) -> float:
    text = client.get(f"{url}/metrics", timeout=5).text
    match = re.search(r'^ctloop_monitor_records_total\{kind="features"\} ([\d.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def monitor_rate(stack: Stack, count: int) -> float:
    process = stack.spawn("monitor")
    os.sched_setaffinity(process.pid, {0})  # before faust starts its threads: they inherit it
    url = stack.url("monitor")
    first = done = None
    deadline = time.monotonic() + 600
    with httpx.Client() as client:
        while done is None:
            if process.poll() is not None:
                raise RuntimeError("the monitor exited during the benchmark")
            if time.monotonic() > deadline:
                raise RuntimeError("the monitor did not process every record within 600 s")
            try:
                seen = processed(client, url)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            now = time.perf_counter()
            if seen > 0 and first is None:
                first = (now, seen)
            if seen >= count and first is not None:
                done = (now, seen)
            time.sleep(0.05)
    assert first is not None
    return (done[1] - first[1]) / (done[0] - first[0])


def one_run(count: int, schema_path: str) -> tuple[float, float]:
    schema = DatasetSchema.model_validate(SCHEMA)
    rng = random.Random(0)
    rows: list[dict[str, object]] = [{f: rng.gauss(0, 1) for f in FEATURES} for _ in range(2000)]
    labels = [int(r["f0"] > 0) for r in rows]  # type: ignore[operator]
    artifact, digest = fitted_artifact(schema, rows, labels, "sklearn.linear_model.LogisticRegression", {})
    profile = ReferenceProfile(
        sample={f: [r[f] for r in rows[:1000]] for f in FEATURES},  # type: ignore[misc]
        validation_accuracy=0.95,
        predictions={"prediction": ["0", "1"] * 500, "score": [0.9] * 1000},
    )
    with bench_stack(
        ("registry",),
        CTLOOP_REGISTRY_TOKEN=TOKEN,
        CTLOOP_SCHEMA=schema_path,
        CTLOOP_MONITOR_COOLDOWN_S="0",
    ) as stack:
        register(stack, schema, artifact, digest, TOKEN, profile)
        fill_records(stack.bootstrap, count)
        bare = bare_rate(stack, count)
        full = monitor_rate(stack, count)
    return full, bare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no RESULTS.md (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.runs = 2000, 1
    folder = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ctloop-bench-monitor-{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    schema_path = os.path.join(folder, "bench.yaml")
    with open(schema_path, "w") as f:
        yaml.safe_dump(SCHEMA, f)
    runs = []
    for run in range(args.runs):
        runs.append(one_run(args.records, schema_path))
        print(
            f"run {run + 1}: monitor {runs[-1][0]:,.0f} rec/s, bare faust agent {runs[-1][1]:,.0f} rec/s",
            flush=True,
        )
    body = f"""
What: {args.records:,} record envelopes (10 numeric features) pre-filled into `records` on the
embedded broker, then read by one faust worker pinned to one core: first a bare faust agent
that only decodes and validates each envelope (`Envelope.decode(...).parsed()`), then the
monitor itself (join table, feature and prediction windows of 500, KS + Benjamini-Hochberg
per window, metrics), with a registered champion and reference profile. Rates are from the
first record to the last. {args.runs} runs, each on a fresh broker.

| worker | records/s: median (min, max, n) |
|---|---|
| ctloop monitor | {fmt([m for m, _ in runs])} |
| bare faust agent (parse only) | {fmt([b for _, b in runs])} |

Monitor / bare agent: {fmt([m / b for m, b in runs], "x", 2)} (goal ≥ 0.7).
"""
    print(body)
    if not args.quick:
        write_section("Monitor throughput", body)


if __name__ == "__main__":
    main()
