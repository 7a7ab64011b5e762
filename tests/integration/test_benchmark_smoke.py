"""Each benchmark runs end to end at tiny sizes (no figures are asserted or written)."""

from __future__ import annotations

import pytest

from benchmarks import bench_ingest
from benchmarks.common import RESULTS

pytestmark = pytest.mark.integration


def test_ingest_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    before = RESULTS.read_text() if RESULTS.exists() else None
    bench_ingest.main(["--quick"])
    out = capsys.readouterr().out
    assert "HTTP / raw producer ratio" in out
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before  # quick runs write nothing


def test_trainer_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_trainer

    before = RESULTS.read_text() if RESULTS.exists() else None
    bench_trainer.main(["--quick"])
    assert "Overhead over the bare fit" in capsys.readouterr().out
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before


def test_serving_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from benchmarks import bench_serving

    if not shutil.which("wrk"):
        pytest.fail("wrk is missing: `make install` installs it (Debian package wrk)")
    before = RESULTS.read_text() if RESULTS.exists() else None
    bench_serving.main(["--quick"])
    assert "Micro-batching over no batching" in capsys.readouterr().out
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before


def test_monitor_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_monitor

    before = RESULTS.read_text() if RESULTS.exists() else None
    bench_monitor.main(["--quick"])
    assert "false alarms" in capsys.readouterr().out
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before
