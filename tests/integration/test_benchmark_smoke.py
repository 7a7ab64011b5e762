"""Each benchmark runs end to end at tiny sizes, peers included (no figures are asserted or
written: a quick run leaves RESULTS.md as it was). The serving, loop, replicas and monitor
throughput benchmarks' smokes take 45-75 s each even quick (stacks, MLServer, River): they run
in `make test-long`, which keeps `make test` within its budget for the scale-out test."""

from __future__ import annotations

import importlib
import shutil

import pytest

from benchmarks.common import RESULTS

pytestmark = pytest.mark.integration


def quick(benchmark: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `benchmarks.<benchmark>` with --quick; its printed report."""
    before = RESULTS.read_text() if RESULTS.exists() else None
    importlib.import_module(f"benchmarks.{benchmark}").main(["--quick"])
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before
    return capsys.readouterr().out


def test_ingest_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "HTTP / raw producer ratio" in quick("bench_ingest", capsys)


def test_trainer_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "Trigger to upload / bare fit" in quick("bench_trainer", capsys)


@pytest.mark.long
def test_serving_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    if not shutil.which("wrk"):
        pytest.fail("wrk is missing: `make install` installs it (Debian package wrk)")
    out = quick("bench_serving", capsys)
    assert "Micro-batching over no batching" in out and "MLServer (parallel_workers=0)" in out


def test_monitor_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "false alarms" in quick("bench_monitor", capsys)


def test_estimated_performance_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "harmful covariate shift" in quick("bench_estimated", capsys)


@pytest.mark.long  # four brokers and six faust workers: over a minute
def test_monitor_throughput_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "Monitor / bare agent" in quick("bench_monitor_throughput", capsys)


@pytest.mark.long
def test_loop_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    out = quick("bench_loop", capsys)
    assert "River ARF, online" in out and "Hoeffding Adaptive Tree" in out and "peak under load" in out


@pytest.mark.long
def test_replicas_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "| serving, requests/s |" in quick("bench_replicas", capsys)


def test_console_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert "store queries alone" in quick("bench_console", capsys)
