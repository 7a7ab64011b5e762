"""Serving throughput and latency at 64 connections of one-row requests, on one core, beside
its limits in the same run: an empty FastAPI endpoint (HTTP alone) and the model's own
in-process predict. ctloop is measured with and without micro-batching.

The load generator is wrk (Debian package), pinned to the other core. The model is a
20-feature logistic-regression pipeline (the issue's reference). MLServer, the peer the issue
names, is not in this run yet.

    python -m benchmarks.bench_serving [--seconds S] [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from benchmarks.common import bench_stack, fmt, write_section
from services.serving.model import LoadedModel
from services.trainer.pipeline import build_pipeline, make_estimator
from shared.broker import free_port
from shared.features import encode_features
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.schema import DatasetSchema
from shared.serialization import dump_model

TOKEN = "bench-serving-token-0123456789"
FEATURES = [f"f{i}" for i in range(20)]
SCHEMA = {
    "name": "bench",
    "label": {"classes": [0, 1]},
    "features": [{"name": f, "type": "numeric"} for f in FEATURES],
}


def model_bytes(schema: DatasetSchema) -> tuple[bytes, str]:
    rng = random.Random(0)
    rows = [{f: rng.gauss(0, 1) for f in FEATURES} for _ in range(2000)]
    y = [int(r["f0"] + r["f1"] > 0) for r in rows]
    pipeline = build_pipeline(
        schema, make_estimator("sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    )
    pipeline.fit(encode_features(schema, rows), y)
    return dump_model(pipeline)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": requests,
        "errors": int(errors.group(1)) if errors else 0,
    }


def measure(url: str, pid: int, seconds: float, script: Path) -> dict[str, float]:
    os.sched_setaffinity(pid, {0})
    for child in Path(f"/proc/{pid}/task").iterdir():  # every thread of the server on core 0
        os.sched_setaffinity(int(child.name), {0})
    wrk(url, 2, 64, script)  # warm-up
    before = cpu_seconds(pid)
    result = wrk(url, seconds, 64, script)
    result["cpu_us"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests at {url}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no RESULTS.md (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.runs = 1, 1
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("bench_serving needs wrk and taskset (Debian: apt-get install wrk util-linux)")
    schema = DatasetSchema.model_validate(SCHEMA)
    artifact, digest = model_bytes(schema)
    row = {f: 0.1 * i for i, f in enumerate(FEATURES)}
    folder = Path(tempfile.mkdtemp())
    schema_path = folder / "bench.yaml"
    schema_path.write_text(yaml.safe_dump(SCHEMA))
    script = folder / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{json.dumps({'features': row})}'\n"
    )

    results: dict[str, list[dict[str, float]]] = {
        "ctloop (micro-batching)": [],
        "ctloop (no batching)": [],
        "empty FastAPI endpoint": [],
    }
    for run in range(args.runs):
        for label, rows in (("ctloop (micro-batching)", "256"), ("ctloop (no batching)", "1")):
            with bench_stack(
                ("registry", "serving"),
                CTLOOP_REGISTRY_TOKEN=TOKEN,
                CTLOOP_SCHEMA=str(schema_path),
                CTLOOP_SERVING_MAX_BATCH_ROWS=rows,
                CTLOOP_SERVING_SHADOW_FRACTION="0",
            ) as stack:
                meta = VersionMetadata(
                    digest=digest,
                    input_schema=schema,
                    gate_report=GateReport(passed=True, gates=[]),
                    lineage=Lineage(run_id="bench", trigger="manual"),
                )
                httpx.post(
                    f"{stack.url('registry')}/v1/models/bench/versions",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    files={"artifact": ("m", artifact)},
                    data={"metadata": meta.model_dump_json()},
                ).raise_for_status()
                deadline = time.monotonic() + 60
                while httpx.get(f"{stack.url('serving')}/healthz").status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError("serving did not load the model")
                    time.sleep(0.2)
                results[label].append(
                    measure(
                        f"{stack.url('serving')}/v1/predict",
                        stack.processes["serving"].pid,
                        args.seconds,
                        script,
                    )
                )
        port = free_port()
        empty = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks.empty_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.post(f"http://127.0.0.1:{port}/v1/predict")
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            results["empty FastAPI endpoint"].append(
                measure(f"http://127.0.0.1:{port}/v1/predict", empty.pid, args.seconds, script)
            )
        finally:
            empty.terminate()
            empty.wait(10)
        print(
            f"run {run + 1}: "
            + ", ".join(
                f"{k} {v[-1]['rps']:,.0f} req/s p99 {v[-1]['p99']:.1f} ms" for k, v in results.items()
            ),
            flush=True,
        )

    from shared.registry_api import ModelVersion
    from shared.serialization import load_model

    version = ModelVersion(
        name="bench",
        version=1,
        created_at=datetime.now(UTC),
        digest=digest,
        input_schema=schema,
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="bench", trigger="manual"),
    )
    loaded = LoadedModel(version=version, pipeline=load_model(artifact, digest))  # type: ignore[arg-type]
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        loaded.predict([row])
        calls += 1
    one_row = calls / (time.perf_counter() - started)

    table = "\n".join(
        f"| {name} | {fmt([r['rps'] for r in runs])} | {fmt([r['p50'] for r in runs], ' ms', 1)} | "
        f"{fmt([r['p99'] for r in runs], ' ms', 1)} | {fmt([r['cpu_us'] for r in runs], ' µs', 0)} |"
        for name, runs in results.items()
    )
    batched = [
        b["rps"] / u["rps"]
        for b, u in zip(results["ctloop (micro-batching)"], results["ctloop (no batching)"], strict=True)
    ]
    body = f"""
What: 64 connections of one-row `POST /v1/predict` (wrk, pinned to core 1) against a server
pinned to core 0; a 20-feature logistic-regression pipeline; {args.runs} runs of {args.seconds:g} s,
alternating. Limits in the same run: an empty FastAPI endpoint (HTTP and JSON alone) and the
model's own in-process one-row predict. Zero failed requests in every run (checked).
**MLServer, the issue's peer, is not measured yet.**

| server | req/s: median (min, max, n) | p50 | p99 | server CPU per request |
|---|---|---|---|---|
{table}

In-process one-row predict (the ceiling without batching): {one_row:,.0f} calls/s.
Micro-batching over no batching: {fmt(batched, "x", 2)}.
"""
    print(body)
    if not args.quick:
        write_section("Serving throughput", body)


if __name__ == "__main__":
    main()
