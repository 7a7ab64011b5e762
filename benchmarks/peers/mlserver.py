"""MLServer serving a given scikit-learn pipeline, for the serving benchmark.

The pipeline is written with joblib (MLServer's sklearn runtime loads nothing else); the
benchmark writes it from the very object ctloop serves, so both servers run the same model.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib

from benchmarks.peers import peer_python
from shared.broker import free_port


@contextlib.contextmanager
def serve(
    pipeline: object,
    folder: Path,
    parallel_workers: int | None,
    max_batch_size: int = 1,
    metrics: bool = True,
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Run `mlserver start` on free ports; yield the infer URL, the gRPC target and the process.

    `parallel_workers=None` keeps MLServer's default (one inference worker process).
    `max_batch_size > 1` turns on MLServer's adaptive batching (2 ms max wait).
    `metrics=False` turns off its Prometheus endpoint and the per-request bookkeeping behind it.
    """
    python = peer_python("mlserver")
    if python is None:
        raise RuntimeError("MLServer is not installed: run `make peers`")
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "bench"
    model.mkdir(exist_ok=True)
    joblib.dump(pipeline, model / "model.joblib")
    model_settings: dict[str, object] = {
        "name": "bench",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if max_batch_size > 1:
        model_settings |= {"max_batch_size": max_batch_size, "max_batch_time": 0.002}
    (model / "model-settings.json").write_text(json.dumps(model_settings))
    port, grpc_port = free_port(), free_port()
    settings: dict[str, object] = {
        "debug": False,
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
    }
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    if not metrics:
        settings["metrics_endpoint"] = None
    (folder / "settings.json").write_text(json.dumps(settings))
    log = (folder / "mlserver.log").open("wb")
    process = subprocess.Popen(
        [str(python.parent / "mlserver"), "start", str(folder)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlserver exited; see {folder / 'mlserver.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/models/bench/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlserver not ready after 120 s; see {folder / 'mlserver.log'}")
            time.sleep(0.3)
        yield url, f"127.0.0.1:{grpc_port}", process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
