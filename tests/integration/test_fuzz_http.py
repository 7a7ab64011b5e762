"""Every HTTP API fuzzed from its own OpenAPI spec with schemathesis (its CLI, as a user would
run it): whatever it sends, no 5xx and no crash. Writes to the registry are tried both with
the token (to reach past the auth check) and without it.

CTLOOP_FUZZ_EXAMPLES sets the examples per operation (`make test-long` raises it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.supervisor import SERVICES, Stack
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = os.environ.get("CTLOOP_FUZZ_EXAMPLES", "25")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("fuzz"), SERVICES)
    upload_demo(running, seed=1, rows=300)
    wait_for(
        lambda: httpx.get(f"{running.url('serving')}/healthz", timeout=5).status_code == 200,
        "serving to load a model",
    )
    yield running
    stop_stack(running)


def schemathesis(url: str, folder: Path, *extra: str) -> str:
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    options = [
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        EXAMPLES,
        "--seed",
        "7",
        "--workers",
        "1",
    ]
    out = subprocess.run(
        [command, "run", f"{url}/openapi.json", *options, "--phases", "examples,coverage,fuzzing", *extra],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=folder,
        env={**os.environ, "NO_COLOR": "1"},
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    return report


@pytest.mark.parametrize("service", SERVICES)
def test_no_input_makes_a_server_error(stack: Stack, service: str, tmp_path: Path) -> None:
    role = {"ingest": "producer", "registry": "operator", "trainer": "operator"}.get(service, "reader")
    auth = ["--header", f"Authorization: Bearer {stack.token(role)}"]
    report = schemathesis(stack.url(service), tmp_path, *auth)
    if service == "registry":
        report += schemathesis(stack.url(service), tmp_path)  # and every write without a token
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", report))
    print(f"{service}: schemathesis finished without a server error ({cases} test cases)")
    for process_name, process in stack.processes.items():
        assert process.poll() is None, f"{process_name} died during the fuzzing"
