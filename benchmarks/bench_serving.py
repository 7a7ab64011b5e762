"""Serving throughput and latency at 64 connections of one-row requests, on one core, beside
MLServer (the issue's peer) and the limits, all in the same run: an empty FastAPI endpoint
(HTTP alone) and the model's own in-process predict. Every ctloop path is measured: `/v1`,
V2 JSON, V2 binary (tritonclient's default) and V2 over gRPC (beside MLServer's gRPC). Then
a HistGradientBoosting model (~0.6 ms per one-row predict, 100 trees: where micro-batching
matters most), and a hot swap under load on each of the four paths, with the p99 around the
swap beside the steady p99.

The HTTP load generator is wrk (Debian package), the gRPC one benchmarks/grpc_load.py, both
pinned to the other core. The models are 20-feature pipelines; MLServer loads the very object
ctloop serves (joblib). MLServer comes from `make peers` (.venv-peers/mlserver).

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
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc
import httpx
import yaml

from benchmarks.common import bench_stack, cpu_seconds, fitted_artifact, fmt, register, write_section
from benchmarks.peers import mlserver, peer_python
from services.serving.model import LoadedModel
from services.serving.protocol import inference_pb2 as pb
from services.serving.v2_binary import HEADER
from services.supervisor import Stack
from shared.broker import free_port
from shared.registry_api import GateReport, Lineage, ModelVersion
from shared.schema import DatasetSchema
from shared.serialization import load_model

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


def binary_body() -> tuple[bytes, int]:
    """ctloop's V2 layout with the binary tensor data extension, as tritonclient sends it by
    default (and asking for binary outputs, its default too): (body, JSON header length)."""
    inputs = [
        {"name": f, "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}} for f in ROW
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(struct.pack("<d", v) for v in ROW.values()), len(header)


def grpc_message() -> bytes:
    """ctloop's gRPC ModelInferRequest, serialized: a tensor per feature as raw contents
    (tritonclient.grpc's way)."""
    ours = pb.ModelInferRequest(model_name="bench")
    for name, value in ROW.items():
        ours.inputs.add(name=name, datatype="FP64", shape=[1])
        ours.raw_input_contents.append(struct.pack("<d", value))
    return ours.SerializeToString()


def grpc_requests(folder: Path) -> dict[str, Path]:
    """The serialized gRPC ModelInferRequests: ctloop's (`grpc_message`), and MLServer's one
    [1, 20] tensor as typed contents."""
    theirs = pb.ModelInferRequest(model_name="bench")
    theirs.inputs.add(
        name="x",
        datatype="FP64",
        shape=[1, 20],
        contents=pb.InferTensorContents(fp64_contents=list(ROW.values())),
    )
    theirs.outputs.add(name="predict")
    theirs.outputs.add(name="predict_proba")
    files = {"ctloop": folder / "grpc-ctloop.bin", "mlserver": folder / "grpc-mlserver.bin"}
    files["ctloop"].write_bytes(grpc_message())
    files["mlserver"].write_bytes(theirs.SerializeToString())
    return files


MODELS = {
    "logistic regression": ("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
    "HistGradientBoosting": ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 100}),
}


def model_bytes(
    schema: DatasetSchema, seed: int = 0, model: str = "logistic regression"
) -> tuple[bytes, str]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = [{f: rng.gauss(0, 1) for f in FEATURES} for _ in range(2000)]
    labels = [int(r["f0"] + r["f1"] > 0) for r in rows]  # type: ignore[operator]
    return fitted_artifact(schema, rows, labels, *MODELS[model])


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


def measure(
    url: str, pid: int, seconds: float, script: Path, strict: bool = True, connections: int = 64
) -> dict[str, float]:
    """wrk against `url`, with the server's CPU per request; `strict`: any failed request is fatal."""
    pin(pid, 0)
    wrk(url, 2, connections, script)  # warm-up
    pin(pid, 0)  # threads and workers started during the warm-up
    before = cpu_seconds(pid)
    result = wrk(url, seconds, connections, script)
    result["cpu_us"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    if result["errors"] and strict:
        raise RuntimeError(f"{result['errors']} failed requests at {url}")
    return result


def measure_grpc(
    target: str, pid: int, seconds: float, request: Path, connections: int = 64
) -> dict[str, float]:
    """benchmarks/grpc_load.py (`connections` calls in flight, core 1) against `target`, as `measure`."""

    def run(duration: float) -> dict[str, float]:
        command = ["taskset", "-c", "1", sys.executable, "-m", "benchmarks.grpc_load", target, str(request)]
        out = subprocess.run(
            [*command, "--seconds", str(duration), "--concurrency", str(connections)],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        )
        result: dict[str, float] = json.loads(out.stdout)
        return result

    pin(pid, 0)
    run(2)  # warm-up
    pin(pid, 0)
    before = cpu_seconds(pid)
    result = run(seconds)
    result["cpu_us"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    return result


def lua(folder: Path, body: dict[str, object] | bytes, header_length: int | None = None) -> Path:
    """A wrk script posting `body` (JSON, or bytes with the binary extension's header length)."""
    script = folder / f"post-{len(list(folder.glob('post-*.lua')))}.lua"
    if isinstance(body, bytes):
        escaped = "".join(f"\\{b:03d}" for b in body)  # Lua strings hold any byte as \ddd
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/octet-stream"\n'
            f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"\nwrk.body = "{escaped}"\n'
        )
    else:
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{json.dumps(body)}'\n"
        )
    return script


def upload(stack: Stack, schema: DatasetSchema, artifact: bytes, digest: str) -> None:
    register(stack, schema, artifact, digest, stack.token("trainer"))


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


def empty_grpc(grpc_files: dict[str, Path], seconds: float) -> dict[str, float]:
    """benchmarks/empty_grpc.py (grpcio's server doing no work) under ctloop's gRPC request."""
    port = free_port()
    empty = subprocess.Popen([sys.executable, "-m", "benchmarks.empty_grpc", str(port)])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return measure_grpc(f"127.0.0.1:{port}", empty.pid, seconds, grpc_files["ctloop"])
    finally:
        empty.terminate()
        empty.wait(10)


SWAP_DEADLINE_S = 120.0
"""How long the load goes on waiting for the new version's first answer (a slow machine
under load swaps in seconds: the pre-swap check times both models there)."""


SWAP_PATHS = ("/v1", "V2 JSON", "V2 binary", "gRPC")
"""The paths the swap is measured on, each in its own run of `swap_under_load`."""

Answer = tuple[int, int | None]
"""A call's outcome: its status (HTTP's, 200 for a gRPC OK, 0 for a failure without one) and
the model version that answered."""


def swap_call(
    path: str, stack: Stack, http: aiohttp.ClientSession, channel: grpc.aio.Channel
) -> Callable[[], Awaitable[Answer]]:
    """One one-row request on `path` (as its clients send it by default), reporting its answer."""
    serving = stack.url("serving")
    if path == "gRPC":
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None
        )
        request = grpc_message()

        async def by_grpc() -> Answer:
            try:
                answer = pb.ModelInferResponse.FromString(await call(request, timeout=10))
            except grpc.aio.AioRpcError:
                return 0, None
            return 200, int(answer.model_version)

        return by_grpc
    if path == "V2 binary":
        url, (body, header_length) = f"{serving}/v2/models/bench/infer", binary_body()
        headers = {"Content-Type": "application/octet-stream", HEADER: str(header_length)}
    else:
        url = f"{serving}/v1/predict" if path == "/v1" else f"{serving}/v2/models/bench/infer"
        body = json.dumps(BODIES["v1" if path == "/v1" else "v2"]).encode()
        headers = {"Content-Type": "application/json"}

    async def by_http() -> Answer:
        try:
            async with http.post(url, data=body, headers=headers) as r:
                if r.status != 200:
                    return r.status, None
                raw = await r.read()
        except aiohttp.ClientError:
            return 0, None
        if HEADER in r.headers:  # binary outputs after a JSON header
            raw = raw[: int(r.headers[HEADER])]
        return 200, int(json.loads(raw)["model_version"])

    return by_http


async def load_with_swap(
    path: str, stack: Stack, seconds: float, swap_at: float, swap: Callable[[], None]
) -> tuple[list[tuple[float, float, int, int | None]], float]:
    """64 connections (or gRPC calls in flight) of one-row requests on `path` for at least
    `seconds`, and on until 1 s after the new version's first answer; `swap()` runs (in a
    thread) at `swap_at`.

    Returns every request as (finish time, latency, status, version) and when the swap began.
    """
    done: list[tuple[float, float, int, int | None]] = []
    start = time.monotonic()
    first_new: list[float] = []

    def going(now: float) -> bool:
        if now > SWAP_DEADLINE_S:
            return False
        return now < seconds or not first_new or now < first_new[0] + 1.0

    async def client(call: Callable[[], Awaitable[Answer]]) -> None:
        while going(time.monotonic() - start):
            sent = time.monotonic()
            status, version = await call()
            now = time.monotonic()
            done.append((now - start, now - sent, status, version))
            if version not in (None, 1) and not first_new:
                first_new.append(now - start)

    async def trigger() -> float:
        await asyncio.sleep(swap_at)
        began = time.monotonic() - start
        await asyncio.to_thread(swap)
        return began

    connector = aiohttp.TCPConnector(limit=64)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        grpc.aio.insecure_channel(stack.grpc_target) as channel,
    ):
        call = swap_call(path, stack, http, channel)
        *_, began = await asyncio.gather(*(client(call) for _ in range(64)), trigger())
    return done, began


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1e3 if len(latencies) > 1 else float("nan")


def swap_under_load(schema_path: Path, schema: DatasetSchema, seconds: float, path: str) -> dict[str, float]:
    """One hot swap from version 1 to 2 in the middle of a steady load on `path`, on one core."""
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
                    path,
                    stack,
                    seconds,
                    seconds / 3,
                    lambda: upload(stack, schema, *second),
                )
            )
        finally:
            os.sched_setaffinity(0, affinity)
    first_new = min((t for t, _, _, v in done if v == 2), default=None)
    if first_new is None:
        raise RuntimeError(f"no answer from the new version within {SWAP_DEADLINE_S:.0f} s of load")
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


CTLOOP_PATHS = {
    "/v1/predict": "v1",
    "V2 JSON": "v2",
    "V2 binary (tritonclient's default)": "v2-binary",
    "V2 gRPC (raw tensors)": "grpc",
}
BEST_MLSERVER = "MLServer (parallel_workers=0, adaptive batching 64, metrics off)"
FEW_CLIENTS = (1, 8)
"""Concurrencies measured besides 64 (logistic regression only, not in a --quick smoke run): one
client is where the hand-off to the micro-batcher costs most."""
FEW_MARK = "@ clients="
FEW_CLIENT_PEERS = ("MLServer (parallel_workers=0)", BEST_MLSERVER)


def measure_ctloop(
    schema_path: Path,
    schema: DatasetSchema,
    model: tuple[bytes, str],
    paths: list[str],
    max_rows: str,
    seconds: float,
    scripts: dict[str, Path],
    grpc_files: dict[str, Path],
    few: bool = False,
) -> dict[str, dict[str, float]]:
    """One serving process, each of `paths` (CTLOOP_PATHS keys) measured in turn at 64 clients,
    and with `few`, `/v1` and gRPC also at each of FEW_CLIENTS."""
    results = {}
    with ctloop_stack(schema_path, max_rows) as stack:  # type: ignore[attr-defined]
        upload(stack, schema, *model)
        wait_for_version(stack, 1)
        pin(stack.processes["registry"].pid, 1)
        pid = stack.processes["serving"].pid
        for path in paths:
            kind = CTLOOP_PATHS[path]
            for clients in (64, *(FEW_CLIENTS if few and kind in ("v1", "grpc") else ())):
                label = path if clients == 64 else f"{path} {FEW_MARK}{clients}"
                if kind == "grpc":
                    results[label] = measure_grpc(
                        stack.grpc_target, pid, seconds, grpc_files["ctloop"], clients
                    )
                    continue
                url = (
                    f"{stack.url('serving')}/v1/predict"
                    if kind == "v1"
                    else f"{stack.url('serving')}/v2/models/bench/infer"
                )
                results[label] = measure(url, pid, seconds, scripts[kind], connections=clients)
    return results


def measure_model(
    name: str,
    run: int,
    args: argparse.Namespace,
    schema_path: Path,
    schema: DatasetSchema,
    folder: Path,
    scripts: dict[str, Path],
    grpc_files: dict[str, Path],
    with_peer: bool,
) -> dict[str, dict[str, float]]:
    """Every server for one model, once: ctloop's paths, then MLServer's configurations."""
    artifact, digest = model_bytes(schema, model=name)
    full = name == "logistic regression"  # the reference model gets every path and configuration
    paths = list(CTLOOP_PATHS) if full else ["/v1/predict", "V2 gRPC (raw tensors)"]
    measured = measure_ctloop(
        schema_path,
        schema,
        (artifact, digest),
        paths,
        "256",
        args.seconds,
        scripts,
        grpc_files,
        few=full and not args.quick,
    )
    results = {}
    for label, result in measured.items():
        path, _, clients = label.partition(f" {FEW_MARK}")
        results[f"ctloop {path} (micro-batching)" + (f" {FEW_MARK}{clients}" if clients else "")] = result
    results["ctloop /v1/predict (no batching)"] = measure_ctloop(
        schema_path, schema, (artifact, digest), ["/v1/predict"], "1", args.seconds, scripts, grpc_files
    )["/v1/predict"]
    if with_peer:
        # a smoke run checks the peer's path with one configuration, not its best figure
        configs = list(MLSERVER_CONFIGS.items())
        configs = configs[1:2] if args.quick else configs if full else configs[2:]
        pipeline = load_model(artifact, digest)
        for label, config in configs:
            place = folder / f"mlserver-{name[:3]}-{run}-{len(results)}"
            with mlserver.serve(pipeline, place, **config) as (url, target, process):
                results[label] = measure(url, process.pid, args.seconds, scripts["mlserver"], strict=False)
                if full and not args.quick and label in FEW_CLIENT_PEERS:
                    for clients in FEW_CLIENTS:
                        results[f"{label} {FEW_MARK}{clients}"] = measure(
                            url, process.pid, args.seconds, scripts["mlserver"], False, clients
                        )
                if label == BEST_MLSERVER:
                    results[f"{label}, gRPC"] = measure_grpc(
                        target, process.pid, args.seconds, grpc_files["mlserver"]
                    )
    return results


def ratios(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> str:
    pairs = list(zip(ours, theirs, strict=True))
    return (
        f"{fmt([o['rps'] / p['rps'] for o, p in pairs], 'x', 2)} requests/s, "
        f"p99 {fmt([o['p99'] / p['p99'] for o, p in pairs], 'x', 2)}, "
        f"CPU per request {fmt([o['cpu_us'] / p['cpu_us'] for o, p in pairs], 'x', 2)}"
    )


def table(results: dict[str, list[dict[str, float]]]) -> str:
    return "\n".join(
        f"| {name} | {fmt([r['rps'] for r in runs])} | {fmt([r['p50'] for r in runs], ' ms', 1)} | "
        f"{fmt([r['p99'] for r in runs], ' ms', 1)} | {fmt([r['cpu_us'] for r in runs], ' µs', 0)} | "
        f"{sum(int(r['errors']) for r in runs)} |"
        for name, runs in results.items()
    )


def best_of(
    results: dict[str, list[dict[str, float]]], names: list[str], runs: int
) -> list[dict[str, float]]:
    """Per run, the result of whichever of `names` answered the most requests/s."""
    return [max((results[name][i] for name in names), key=lambda r: r["rps"]) for i in range(runs)]


def comparison(results: dict[str, list[dict[str, float]]], runs: int) -> str:
    """Each ctloop path over MLServer's best configuration of the same run (by requests/s), at
    64 clients and at each of FEW_CLIENTS where measured."""
    peers = [name for name in MLSERVER_CONFIGS if name in results]
    if not peers:
        return ""
    many = {name: r for name, r in results.items() if FEW_MARK not in name}
    best = best_of(results, peers, runs)
    lines = [
        f"- {name} over MLServer's best HTTP configuration: {ratios(runs_, best)}"
        for name, runs_ in many.items()
        if name.startswith("ctloop") and "no batching" not in name
    ]
    if f"{BEST_MLSERVER}, gRPC" in results:
        grpc = next(runs_ for name, runs_ in many.items() if name.startswith("ctloop V2 gRPC"))
        peer = results[f"{BEST_MLSERVER}, gRPC"]
        lines.append(f"- ctloop gRPC over MLServer's gRPC (same configuration): {ratios(grpc, peer)}")
    for clients in FEW_CLIENTS:
        few_peers = [f"{name} {FEW_MARK}{clients}" for name in FEW_CLIENT_PEERS]
        if not all(name in results for name in few_peers):
            continue
        for name, runs_ in results.items():
            if name.startswith("ctloop") and name.endswith(f"{FEW_MARK}{clients}"):
                lines.append(
                    f"- {name} over MLServer's best HTTP configuration at {clients} clients: "
                    f"{ratios(runs_, best_of(results, few_peers, runs))}"
                )
    return "Ratios in the same run (p99 and CPU below 1 = lower than MLServer's):\n" + "\n".join(lines) + "\n"


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
    folder = Path(tempfile.mkdtemp())
    schema_path = folder / "bench.yaml"
    schema_path.write_text(yaml.safe_dump(SCHEMA))
    scripts = {kind: lua(folder, body) for kind, body in BODIES.items()}
    scripts["v2-binary"] = lua(folder, *binary_body())
    grpc_files = grpc_requests(folder)

    models = list(MODELS)[:1] if args.quick else list(MODELS)
    results: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in models}
    for run in range(args.runs):
        for name in models:
            measured = measure_model(
                name, run, args, schema_path, schema, folder, scripts, grpc_files, with_peer
            )
            for label, result in measured.items():
                results[name].setdefault(label, []).append(result)
        empty = empty_fastapi(scripts, args.seconds)
        results[models[0]].setdefault("empty FastAPI endpoint (limit)", []).append(empty)
        empty = empty_grpc(grpc_files, args.seconds)
        results[models[0]].setdefault("empty grpcio server (limit)", []).append(empty)
        for name in models:
            print(
                f"run {run + 1}, {name}: "
                + ", ".join(
                    f"{k} {v[-1]['rps']:,.0f} req/s p99 {v[-1]['p99']:.1f} ms"
                    for k, v in results[name].items()
                ),
                flush=True,
            )
    one_row = {
        name: in_process_rate(schema, *model_bytes(schema, model=name), args.seconds) for name in models
    }
    swaps: dict[str, list[dict[str, float]]] = {path: [] for path in SWAP_PATHS}
    for _ in range(args.runs):
        for path in SWAP_PATHS:
            swaps[path].append(swap_under_load(schema_path, schema, max(args.seconds * 1.5, 6), path))
            print(f"swap on {path}: {swaps[path][-1]}", flush=True)
    swap_table = "\n".join(
        f"| {path} | {fmt([s['steady_p99'] for s in runs_], ' ms', 1)} | "
        f"{fmt([s['swap_p99'] for s in runs_], ' ms', 1)} | "
        f"{fmt([s['swap_p99'] / s['steady_p99'] for s in runs_], 'x', 2)} | "
        f"{fmt([s['swap_s'] for s in runs_], ' s', 2)} | "
        f"{sum(int(s['failed']) for s in runs_)} of {sum(int(s['requests']) for s in runs_):,} | "
        f"{sum(int(s['unknown_versions']) for s in runs_)} |"
        for path, runs_ in swaps.items()
    )

    lr = results["logistic regression"]
    batched = [
        b["rps"] / u["rps"]
        for b, u in zip(
            lr["ctloop /v1/predict (micro-batching)"], lr["ctloop /v1/predict (no batching)"], strict=True
        )
    ]
    v1_runs = lr["ctloop /v1/predict (micro-batching)"]
    over_v1 = {
        path: [
            r["rps"] / v["rps"] for r, v in zip(lr[f"ctloop {path} (micro-batching)"], v1_runs, strict=True)
        ]
        for path in ("V2 JSON", "V2 binary (tritonclient's default)")
        if f"ctloop {path} (micro-batching)" in lr
    }
    v2_over_v1 = "; ".join(f"{path} {fmt(r, 'x', 2)}" for path, r in over_v1.items())
    peer_note = " (mlserver 1.7.1 + mlserver-sklearn, .venv-peers)" if with_peer else " (not installed)"
    lr_peers = [n for n in MLSERVER_CONFIGS if n in lr]
    lr_best = [r["rps"] for r in best_of(lr, lr_peers, args.runs)] if lr_peers else []
    empty_rps = [r["rps"] for r in lr["empty FastAPI endpoint (limit)"]]
    v1_over_empty = [
        v["rps"] / e for v, e in zip(lr["ctloop /v1/predict (micro-batching)"], empty_rps, strict=True)
    ]
    limit = (
        ""
        if not lr_best
        else f"Three times MLServer's best HTTP configuration (logistic regression) would be "
        f"{fmt([3 * b for b in lr_best], ' requests/s', 0)}; an empty FastAPI endpoint on the same "
        f"core answers {fmt(empty_rps, ' requests/s', 0)} in the same runs, and ctloop's `/v1` "
        f"{fmt(v1_over_empty, 'x', 2)} of it: "
        + (
            "`/v1` is past the goal in these runs."
            if statistics.median(r["rps"] for r in lr["ctloop /v1/predict (micro-batching)"])
            >= 3 * statistics.median(lr_best)
            else "the HTTP goal lies beyond the framework's own rate on one core, whatever the model."
            if statistics.median(empty_rps) < 3 * statistics.median(lr_best)
            else "the framework leaves room for the goal; what is missing is ctloop's own work per request."
        )
    )
    grpc_runs = lr.get("ctloop V2 gRPC (raw tensors) (micro-batching)", [])
    empty_grpc_rps = [r["rps"] for r in lr.get("empty grpcio server (limit)", [])]
    if grpc_runs and len(empty_grpc_rps) == len(grpc_runs):
        limit += (
            f"\n\nThe gRPC path's framework limit: an empty grpcio server answers "
            f"{fmt(empty_grpc_rps, ' requests/s', 0)} on the same core, and ctloop's gRPC path "
            f"{fmt([g['rps'] / e for g, e in zip(grpc_runs, empty_grpc_rps, strict=True)], 'x', 2)} of it."
        )
    header = (
        "| server | req/s: median (min, max, n) | p50 | p99 | server CPU per request "
        "| failed requests (all runs) |\n|---|---|---|---|---|---|"
    )
    sections = []
    for name in models:
        sections.append(
            f"### {name}\n\nIn-process one-row predict (the ceiling without batching): "
            f"{one_row[name]:,.0f} calls/s.\n\n"
            f"{header}\n{table(results[name])}\n\n{comparison(results[name], args.runs)}"
        )
    body = f"""
What: 64 connections (or gRPC calls in flight) of one-row requests (and, for `/v1`, gRPC and
two MLServer configurations, also 1 and 8: the rows marked `@ clients=`), the load generator pinned
to core 1, against a server pinned to core 0 (every thread and worker process); 20-feature
pipelines, the same fitted object in ctloop and MLServer{peer_note};
{args.runs} runs of {args.seconds:g} s, each run measuring every server once in turn.
Each server gets its natural request: ctloop's JSON, ctloop's V2 tensor-per-feature layout
(as JSON, as binary tensors with binary outputs, and over gRPC as raw contents, which is what
tritonclient sends by default), MLServer's one `[1, 20]` FP64 tensor asking for `predict` and
`predict_proba` (over gRPC as typed contents). HTTP load: wrk. gRPC load:
benchmarks/grpc_load.py (Python grpc.aio; its own CPU use is in the results' JSON, and near one
core it is the limit). Limits in the same run: an empty FastAPI endpoint, an empty grpcio
server (benchmarks/empty_grpc.py, under ctloop's gRPC request) and the model's in-process
one-row predict. A failed HTTP request (non-2xx, or a socket error or timeout:
wrk's is 2 s) aborts the run for ctloop and is counted for the peers.

{chr(10).join(sections)}
{limit}

V2 over `/v1` in requests/s (logistic regression, 64 connections, per run): {v2_over_v1} (goal
for V2 JSON: >= 1.0).

Where the time went (measured by hand, not by this script: py-spy at 200-250 Hz on the serving
process at 64 connections, and cProfile on the app called in-process, logistic regression).
2026-12-03: one-row predicts had spent most of their time in scikit-learn's input checks
(`ColumnTransformer.transform` alone 1.15 ms per call on the demo pipeline); the pipeline's
preparation step now runs compiled (`shared/compiled_preparation.py`, checked bit for bit
against scikit-learn at load): one-row predict 1.42 -> 0.10 ms (logistic regression) and
1.98 -> 0.57 ms (HistGradientBoosting), in-process, same machine. On the V2 JSON path, a list
of feature names rebuilt per tensor was 10% of its CPU and route matching 3%.
2026-12-04: pydantic's parse of the 20-tensor request was 14.5% of the V2 JSON path's CPU
(20.3 µs in-process; msgspec now decodes and checks it in 4.3 µs), FastAPI dispatched the
included V2 router's routes a second time and resolved the model name as a declared path
parameter (the routes now sit on the app's router and read the name from the path), the
tensor-to-row step took 13.1 µs (9.9 µs), binary tensors were read through numpy (26.5 ->
18 µs for 20 tensors, through a memoryview) and responses were written by `json` (5.3 ->
1.5 µs, by msgspec). On one machine, before and after, 3 runs each of `/v1`, V2 JSON and V2
binary in one serving process: V2 JSON / `/v1` 0.55-0.57x -> 0.66-0.80x, V2 binary / `/v1`
0.43-0.49x -> 0.51-0.61x. What is left between V2 JSON and `/v1` is per tensor: 20 tensor
objects decoded, checked and turned into a row where `/v1` reads one JSON object, which
costs again in the micro-batcher's smaller batches at the lower rate.
2026-12-05: each gRPC worker thread ran its call on an event loop of its own, so the
micro-batcher woke one loop per waiting call; the thread now waits for the micro-batcher
itself (a plain future). Alternating old and new serving processes, 9 runs each of 6 s:
1,919 -> 2,146 requests/s (1.12x), CPU per request 520 -> 466 µs. Reading each protobuf field
once and the datatype from a dict took the 20-tensor request's decoding 38-43 -> 29 µs
in-process. Of the rest, per call in-process: the gRPC worker's own work ~154 µs of CPU
(decoding ~29, rows and checks ~15, the hand-off to the micro-batcher ~28, logging and
counting ~11), grpcio ~120 µs (the empty server's cost per call), the batched predict and the
prediction log's Kafka writes the rest.
2026-12-05, later: per thread of the serving process (CPU time from /proc at 64 connections,
one-row `/v1`), 225 µs per request: the event loop 149, the prediction log 39, kafka-python's
sender 18 and I/O 3, the micro-batcher 14; without the prediction log the process answered
5,930 requests/s instead of ~4,400. Each prediction event was built as a pydantic model (9.8
µs) and written by it (7.8 µs); it is now written from its fields by msgspec (3.5 µs), and
the serving producer lets batches fill for 25 ms instead of 5 (the sender had built a batch
every few rows). On the event loop, FastAPI's handling around the endpoint (dependencies,
its per-route exception wrapper, the response model) cost more than ctloop's own work: the
two prediction routes are now answered directly by their endpoints (`DirectRoute`), matched
before the other routes, and FastAPI's per-request OpenTelemetry lookup is off. Alternating
old and new serving processes, 6 runs each of 6 s: `/v1` 4,490 (4,234-4,606) -> 6,905
(6,776-7,058) requests/s, CPU per request 230 -> 144 µs; V2 JSON 3,505 -> 5,390 (3 runs
each). After: the event loop ~100 µs, the prediction log ~26, the sender ~13, the
micro-batcher ~7; a kafka-python `send` alone costs ~19 µs of the calling thread's CPU per
event (in-process).

Micro-batching over no batching (logistic regression, /v1): {fmt(batched, "x", 2)}.

Hot swap under load on each path (ctloop, micro-batching, 64 connections or gRPC calls in
flight from an aiohttp or grpc.aio client on core 1, each path's request as its clients send
it by default, a new version registered a third of the way in; {args.runs} runs per path): p99
steady before the swap and while swapping (from the upload to 1 s after the first answer by
the new version), upload to the first new answer, failed requests (non-200 or no answer), and
answers naming a version that is neither:

| path | p99 steady | p99 swapping | ratio | upload to first new answer | failed | unknown version |
|---|---|---|---|---|---|---|
{swap_table}
"""
    print(body)
    if not args.quick:
        write_section("Serving throughput", body)


if __name__ == "__main__":
    main()
