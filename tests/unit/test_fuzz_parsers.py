"""Coverage-guided fuzzing (atheris) of what parses outsiders' input: the JSON reader and
record/label validation, the event envelope decoder, the V2 request decoders over HTTP and gRPC (targets in
tests/fuzz/targets.py, corpus in tests/fuzz/corpus). A few seconds each in `make test`;
`make test-long` sets CTLOOP_FUZZ_SECONDS higher. A finding fails the test with the input's
file, which the fuzzer wrote to a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECONDS = int(os.environ.get("CTLOOP_FUZZ_SECONDS", "5"))


@pytest.mark.parametrize("target", ["validation", "envelope", "v2", "grpc"])
def test_fuzzing_finds_no_unexpected_exception(target: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, f"--seconds={SECONDS}", f"--artifacts={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=SECONDS + 240,
        cwd=Path(__file__).parents[2],
    )
    findings = sorted(p.name for p in tmp_path.iterdir())
    assert run.returncode == 0 and not findings, f"{findings}\n{run.stderr[-4000:]}"
    assert "stat::number_of_executed_units" in run.stderr  # it really ran
