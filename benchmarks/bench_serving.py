"""Serving throughput and latency at 64 connections of one-row requests, on one core, beside
MLServer (the issue's peer) and the limits, all in the same run: an empty FastAPI endpoint
(HTTP alone) and the model's own in-process predict. Then a hot swap under the same load,
with the p99 around the swap beside the steady p99.

The load generator is wrk (Debian package), pinned to the other core. The model is a
20-feature logistic-regression pipeline (the issue's reference); MLServer loads the very
object ctloop serves (joblib). MLServer comes from `make peers` (.venv-peers/mlserver).

    python -m benchmarks.bench_serving [--seconds S] [--runs R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import yaml

from benchmarks.common import bench_stack, fitted_artifact, fmt, register, write_section
from benchmarks.peers import mlserver, peer_python
from services.serving.model import LoadedModel
from services.supervisor import Stack
from shared.broker import free_port
from shared.registry_api import GateReport, Lineage, ModelVersion
from shared.schema import DatasetSchema
from shared.serialization import load_model

TOKEN = "bench-serving-token-0123456789"
FEATURES = [f"f{i}" for i in range(20)]
SCHEMA = {
    "name": "bench",
    "label": {"classes": [0, 1]},
    "features": [{"name": f, "type": "numeric"} for f in FEATURES],
}
ROW = {f: 0.1 * i for i, f in enumerate(FEATURES)}
# Each server gets its own natural one-row request: ctloop's JSON, ctloop's V2 layout (a tensor
# per feature), and MLServer's fastest, one [1, 20] tensor; both V2 servers return both outputs.
BODIES = {
    "v1": {"features": ROW},
    "v2": {
        "inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [v]} for f, v in ROW.items()],
    },
    "mlserver": {
        "inputs": [{"name": "x", "shape": [1, 20], "datatype": "FP64", "data": list(ROW.values())}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    },
}


def model_bytes(schema: DatasetSchema, seed: int = 0) -> tuple[bytes, str]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = [{f: rng.gauss(0, 1) for f in FEATURES} for _ in range(2000)]
    labels = [int(r["f0"] + r["f1"] > 0) for r in rows]  # type: ignore[operator]
    return fitted_artifact(schema, rows, labels, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (MLServer's inference workers are child processes)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def pin(pid: int, core: int) -> None:
    """Every thread of every process in the tree onto one core."""
    for process in process_tree(pid):
        for task in Path(f"/proc/{process}/task").iterdir():
            os.sched_setaffinity(int(task.name), {core})


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for process in process_tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(url: str, seconds: float, connections: int, script: Path) -> dict[str, float]:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    out = subprocess.run(
        [*command, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
    }


def measure(url: str, pid: int, seconds: float, script: Path, strict: bool = True) -> dict[str, float]:
    """wrk against `url`, with the server's CPU per request; `strict`: any failed request is fatal."""
    pin(pid, 0)
    wrk(url, 2, 64, script)  # warm-up
    pin(pid, 0)  # threads and workers started during the warm-up
    before = cpu_seconds(pid)
    result = wrk(url, seconds, 64, script)
    result["cpu_us"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    if result["errors"] and strict:
        raise RuntimeError(f"{result['errors']} failed requests at {url}")
    return result


def lua(folder: Path, body: dict[str, object]) -> Path:
    script = folder / f"post-{len(list(folder.glob('post-*.lua')))}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{json.dumps(body)}'\n"
    )
    return script


def upload(stack: Stack, schema: DatasetSchema, artifact: bytes, digest: str) -> None:
    register(stack, schema, artifact, digest, TOKEN)


def wait_for_version(stack: Stack, version: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(f"{stack.url('serving')}/healthz", timeout=5)
        if response.status_code == 200 and response.json().get("model_version") == version:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"serving did not load version {version}")
        time.sleep(0.2)


def ctloop_stack(schema_path: Path, max_batch_rows: str) -> object:
    return bench_stack(
        ("registry", "serving"),
        CTLOOP_REGISTRY_TOKEN=TOKEN,
        CTLOOP_SCHEMA=str(schema_path),
        CTLOOP_SERVING_MAX_BATCH_ROWS=max_batch_rows,
        CTLOOP_SERVING_SHADOW_FRACTION="0",
    )


def empty_fastapi(scripts: dict[str, Path], seconds: float) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.empty_app:app", "--port", str(port)]
    empty = subprocess.Popen([*command, "--log-level", "warning", "--no-access-log"])
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
        return measure(f"http://127.0.0.1:{port}/v1/predict", empty.pid, seconds, scripts["v1"])
    finally:
        empty.terminate()
        empty.wait(10)


async def load_with_swap(
    url: str, seconds: float, swap_at: float, swap: Callable[[], None]
) -> tuple[list[tuple[float, float, int, int | None]], float]:
    """64 connections of one-row requests for `seconds`; `swap()` runs (in a thread) at `swap_at`.

    Returns every request as (finish time, latency, status, version) and when the swap began.
    """
    done: list[tuple[float, float, int, int | None]] = []
    start = time.monotonic()
    body = json.dumps(BODIES["v1"]).encode()

    async def client(http: aiohttp.ClientSession) -> None:
        while time.monotonic() - start < seconds:
            sent = time.monotonic()
            try:
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    answer = await r.json() if r.status == 200 else None
                    status = r.status
            except aiohttp.ClientError:
                answer, status = None, 0
            now = time.monotonic()
            done.append((now - start, now - sent, status, answer["model_version"] if answer else None))

    async def trigger() -> float:
        await asyncio.sleep(swap_at)
        began = time.monotonic() - start
        await asyncio.to_thread(swap)
        return began

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        *_, began = await asyncio.gather(*(client(http) for _ in range(64)), trigger())
    return done, began


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1e3 if len(latencies) > 1 else float("nan")


def swap_under_load(schema_path: Path, schema: DatasetSchema, seconds: float) -> dict[str, float]:
    """One hot swap from version 1 to 2 in the middle of a steady load, on one core."""
    first, second = model_bytes(schema, 0), model_bytes(schema, 1)
    with ctloop_stack(schema_path, "256") as stack:  # type: ignore[attr-defined]
        upload(stack, schema, *first)
        wait_for_version(stack, 1)
        pin(stack.processes["serving"].pid, 0)
        pin(stack.processes["registry"].pid, 1)
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {1})  # the load generator shares the registry's core, not serving's
        try:
            done, began = asyncio.run(
                load_with_swap(
                    f"{stack.url('serving')}/v1/predict",
                    seconds,
                    seconds / 3,
                    lambda: upload(stack, schema, *second),
                )
            )
        finally:
            os.sched_setaffinity(0, affinity)
    first_new = min((t for t, _, _, v in done if v == 2), default=None)
    if first_new is None:
        raise RuntimeError("no response from the new version during the load")
    steady = [lat for t, lat, _, _ in done if 1.0 <= t < began]
    swapping = [lat for t, lat, _, _ in done if began <= t <= first_new + 1.0]
    return {
        "steady_p99": p99(steady),
        "swap_p99": p99(swapping),
        "swap_s": first_new - began,
        "failed": sum(1 for _, _, status, _ in done if status != 200),
        "unknown_versions": sum(1 for _, _, status, v in done if status == 200 and v not in (1, 2)),
        "requests": len(done),
    }


def in_process_rate(schema: DatasetSchema, artifact: bytes, digest: str, seconds: float) -> float:
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
    while time.perf_counter() - started < seconds:
        loaded.predict([ROW])
        calls += 1
    return calls / (time.perf_counter() - started)


MLSERVER_CONFIGS = {
    "MLServer (default: 1 inference worker)": {"parallel_workers": None},
    "MLServer (parallel_workers=0)": {"parallel_workers": 0},
    "MLServer (parallel_workers=0, adaptive batching 64)": {"parallel_workers": 0, "max_batch_size": 64},
    "MLServer (parallel_workers=0, adaptive batching 64, metrics off)": {
        "parallel_workers": 0,
        "max_batch_size": 64,
        "metrics": False,
    },
}


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
    with_peer = peer_python("mlserver") is not None
    if not with_peer and not args.quick:
        sys.exit("bench_serving compares with MLServer: run `make peers` first (or `make bench`)")
    schema = DatasetSchema.model_validate(SCHEMA)
    artifact, digest = model_bytes(schema)
    pipeline = load_model(artifact, digest)
    folder = Path(tempfile.mkdtemp())
    schema_path = folder / "bench.yaml"
    schema_path.write_text(yaml.safe_dump(SCHEMA))
    scripts = {kind: lua(folder, body) for kind, body in BODIES.items()}

    results: dict[str, list[dict[str, float]]] = {}
    for run in range(args.runs):
        for label, rows, kind in (
            ("ctloop /v1/predict (micro-batching)", "256", "v1"),
            ("ctloop /v2 infer (micro-batching)", "256", "v2"),
            ("ctloop /v1/predict (no batching)", "1", "v1"),
        ):
            with ctloop_stack(schema_path, rows) as stack:  # type: ignore[attr-defined]
                upload(stack, schema, artifact, digest)
                wait_for_version(stack, 1)
                pin(stack.processes["registry"].pid, 1)
                url = (
                    f"{stack.url('serving')}/v1/predict"
                    if kind == "v1"
                    else (f"{stack.url('serving')}/v2/models/bench/infer")
                )
                results.setdefault(label, []).append(
                    measure(url, stack.processes["serving"].pid, args.seconds, scripts[kind])
                )
        if with_peer:
            # a smoke run checks the peer's path with one configuration, not its best figure
            configs = list(MLSERVER_CONFIGS.items())[1:2] if args.quick else MLSERVER_CONFIGS.items()
            for label, config in configs:
                with mlserver.serve(pipeline, folder / f"mlserver-{run}-{len(results)}", **config) as (
                    url,
                    process,
                ):
                    results.setdefault(label, []).append(
                        measure(url, process.pid, args.seconds, scripts["mlserver"], strict=False)
                    )
        results.setdefault("empty FastAPI endpoint (limit)", []).append(empty_fastapi(scripts, args.seconds))
        print(
            f"run {run + 1}: "
            + ", ".join(
                f"{k} {v[-1]['rps']:,.0f} req/s p99 {v[-1]['p99']:.1f} ms" for k, v in results.items()
            ),
            flush=True,
        )
    one_row = in_process_rate(schema, artifact, digest, args.seconds)
    swaps = []
    for _ in range(args.runs):
        swaps.append(swap_under_load(schema_path, schema, max(args.seconds * 1.5, 6)))
        print(f"swap: {swaps[-1]}", flush=True)

    table = "\n".join(
        f"| {name} | {fmt([r['rps'] for r in runs])} | {fmt([r['p50'] for r in runs], ' ms', 1)} | "
        f"{fmt([r['p99'] for r in runs], ' ms', 1)} | {fmt([r['cpu_us'] for r in runs], ' µs', 0)} | "
        f"{sum(int(r['errors']) for r in runs)} |"
        for name, runs in results.items()
    )
    ours = results["ctloop /v1/predict (micro-batching)"]
    batched = [
        b["rps"] / u["rps"] for b, u in zip(ours, results["ctloop /v1/predict (no batching)"], strict=True)
    ]
    comparison = ""
    if with_peer:
        best_peer = [
            max((results[name][i] for name in MLSERVER_CONFIGS if name in results), key=lambda r: r["rps"])
            for i in range(args.runs)
        ]
        pairs = list(zip(ours, best_peer, strict=True))
        comparison = (
            f"ctloop (micro-batching) over MLServer's best configuration in the same run: "
            f"{fmt([o['rps'] / p['rps'] for o, p in pairs], 'x', 2)} "
            f"requests/s; p99 {fmt([o['p99'] / p['p99'] for o, p in pairs], 'x', 2)} "
            f"of MLServer's (below 1 = lower); CPU per request "
            f"{fmt([o['cpu_us'] / p['cpu_us'] for o, p in pairs], 'x', 2)}.\n"
        )
    peer_note = " (mlserver 1.7.1 + mlserver-sklearn, .venv-peers)" if with_peer else " (not installed)"
    body = f"""
What: 64 connections of one-row requests (wrk, pinned to core 1) against a server pinned to
core 0 (every thread and worker process); a 20-feature logistic-regression pipeline, the same
fitted object in ctloop and MLServer{peer_note};
{args.runs} runs of {args.seconds:g} s, each run measuring every server once in turn.
Each server gets its natural request: ctloop's JSON, ctloop's V2 tensor-per-feature layout,
MLServer's one `[1, 20]` FP64 tensor asking for `predict` and `predict_proba`. Limits in the
same run: an empty FastAPI endpoint and the model's in-process one-row predict. A failed
request (non-2xx, or a socket error or timeout: wrk's is 2 s) aborts the run for ctloop and
is counted for the peers.

| server | req/s: median (min, max, n) | p50 | p99 | server CPU per request | failed requests (all runs) |
|---|---|---|---|---|---|
{table}

{comparison}Micro-batching over no batching: {fmt(batched, "x", 2)}.
In-process one-row predict (the ceiling without batching): {one_row:,.0f} calls/s.

Hot swap under load (ctloop, micro-batching, 64 connections from an aiohttp client on core 1,
a new version registered a third of the way in; {len(swaps)} runs): p99 while swapping (from
the upload to 1 s after the first answer by the new version) {fmt([s["swap_p99"] for s in swaps], " ms", 1)}
against {fmt([s["steady_p99"] for s in swaps], " ms", 1)} steady before it, a ratio of
{fmt([s["swap_p99"] / s["steady_p99"] for s in swaps], "x", 2)}; upload to first new answer
{fmt([s["swap_s"] for s in swaps], " s", 2)}; failed requests {sum(int(s["failed"]) for s in swaps)} of
{sum(int(s["requests"]) for s in swaps):,}; answers naming an unknown version
{sum(int(s["unknown_versions"]) for s in swaps)}.
"""
    print(body)
    if not args.quick:
        write_section("Serving throughput", body)


if __name__ == "__main__":
    main()
