"""Throughput with one and with two replicas, side by side in one run, on this machine:

- ingest: records/s of `POST /v1/records` (batches of 500, 4 clients) sent to one replica, and
  spread over two (2 clients each);
- serving: requests/s of `POST /v1/predict` (one row, 64 connections) with wrk against one
  replica, and two wrk processes against two (32 connections each, summed).

Measurements alternate (1, 2, 1, 2, ...) so drift of the shared machine hits both alike; the
ratio (two over one) is computed per run and reported as a median. On a 2-core machine the
load generator, the broker and the replicas share the same two cores: read the ratio as what
this machine can show, not as how the service scales on more cores.

    python -m benchmarks.bench_replicas [--runs R] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.bench_ingest import http_ingest, records
from benchmarks.bench_serving import lua
from benchmarks.common import bench_stack, fitted_artifact, fmt, register, write_section
from services.demo.stream import ConceptStream
from shared.schema import load_schema
from shared.settings import DEFAULT_SCHEMA


def wrk_many(urls: list[str], seconds: float, connections: int, script: Path) -> float:
    """Requests/s of one wrk per URL running together (connections split evenly), summed;
    any failed request is fatal."""
    each = max(1, connections // len(urls))
    runs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{each}", f"-d{int(seconds)}s", "-s", str(script), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    total = 0.0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if failed:
            raise RuntimeError(f"{failed.group(1)} failed requests: {out}")
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return total


def wait_for_model(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/healthz", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} loaded no model in {timeout_s:.0f} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no RESULTS.md (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.records, args.seconds = 1, 1000, 2.0

    schema = load_schema(DEFAULT_SCHEMA)
    stream = ConceptStream(seed=3, drift_at=10**9)
    rows, labels = zip(*stream.take(2000), strict=True)
    artifact, digest = fitted_artifact(
        schema, [r["features"] for r in rows], list(labels), "sklearn.linear_model.LogisticRegression", {}
    )
    replicas = {"ingest": 2, "serving": 2}
    with (
        tempfile.TemporaryDirectory() as folder,
        bench_stack(
            ("registry", "ingest", "serving"), replicas=replicas, CTLOOP_SERVING_SHADOW_FRACTION="0"
        ) as stack,
    ):
        register(stack, schema, artifact, digest, stack.token("trainer"))
        for url in stack.urls("serving"):  # both hold the champion before anything is timed
            wait_for_model(url)
        script = lua(Path(folder), {"records": [rows[0]]})
        predict = [url + "/v1/predict" for url in stack.urls("serving")]
        ingest_one, ingest_two, serving_one, serving_two = [], [], [], []
        token = stack.token("producer")
        for run in range(args.runs):
            ingest_one.append(
                http_ingest(stack.urls("ingest")[:1], token, records(args.records, f"a{run}"), 500, 4)
            )
            ingest_two.append(
                http_ingest(stack.urls("ingest"), token, records(args.records, f"b{run}"), 500, 4)
            )
            serving_one.append(wrk_many(predict[:1], args.seconds, 64, script))
            serving_two.append(wrk_many(predict, args.seconds, 64, script))
            print(
                f"run {run + 1}: ingest {ingest_one[-1]:,.0f} -> {ingest_two[-1]:,.0f} records/s, "
                f"serving {serving_one[-1]:,.0f} -> {serving_two[-1]:,.0f} requests/s",
                flush=True,
            )
    ingest_ratio = [two / one for one, two in zip(ingest_one, ingest_two, strict=True)]
    serving_ratio = [two / one for one, two in zip(serving_one, serving_two, strict=True)]
    body = f"""
What: one replica against two on the same embedded broker, alternating within one run
({args.runs} runs). Ingest: {args.records:,} records per measurement, batches of 500 from 4
clients (to one replica, or 2 clients to each of two). Serving: `POST /v1/predict` with one row
(logistic regression), 64 connections for {args.seconds:g} s (one wrk, or one wrk of 32 per
replica, summed). Nothing is pinned: replicas, broker and load generators share the machine's
cores, so this shows what one machine can, not scaling across machines.

| service | 1 replica | 2 replicas | 2 / 1 |
|---|---|---|---|
| ingest, records/s | {fmt(ingest_one)} | {fmt(ingest_two)} | {fmt(ingest_ratio, digits=2)} |
| serving, requests/s | {fmt(serving_one)} | {fmt(serving_two)} | {fmt(serving_ratio, digits=2)} |
"""
    print(body)
    if not args.quick:
        write_section("Replicas", body)


if __name__ == "__main__":
    main()
