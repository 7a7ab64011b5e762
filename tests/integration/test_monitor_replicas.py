"""Two monitor workers in one faust group share the data topics, and both follow every
promotion: `models` has one partition per model name, so a shared group gave it to one worker
only and the other kept testing its windows against a stale reference."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from services.supervisor import Stack, _die_with_parent
from shared.broker import free_port
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def two_monitors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[str]]]:
    stack = start_stack(tmp_path_factory.mktemp("monitors"), ("registry", "monitor"))
    port = free_port()
    log = (tmp_path_factory.mktemp("monitor-2") / "monitor-2.log").open("w")
    second = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "monitor"],
        env={**stack.env, "CTLOOP_MONITOR_PORT": str(port), "CTLOOP_INSTANCE": "monitor-2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    urls = [stack.url("monitor"), f"http://127.0.0.1:{port}"]
    try:
        yield stack, urls
    finally:
        second.terminate()
        second.wait(30)
        log.close()
        stop_stack(stack)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False  # not listening yet


def status(stack: Stack, url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{url}/v1/drift/status", timeout=5, headers=stack.auth())
    except httpx.HTTPError:
        return None
    found: dict[str, object] = response.json()
    return found


def test_every_monitor_worker_follows_every_promotion(two_monitors: tuple[Stack, list[str]]) -> None:
    stack, urls = two_monitors
    for url in urls:
        wait_for(lambda url=url: ready(url), f"{url} ready", 180)
    for expected, seed in ((1, 1), (2, 2)):
        assert upload_demo(stack, seed=seed)["version"] == expected
        for url in urls:
            wait_for(
                lambda url=url, expected=expected: (
                    (status(stack, url) or {}).get("reference_version") == expected
                ),
                f"{url} to take v{expected} as its reference",
                120,
            )
