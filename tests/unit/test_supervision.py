"""The supervisor restarts a failed worker with backoff, and /healthz names a task while it
is down."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from shared.http import create_app
from shared.supervision import Supervisor


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Flaky:
    """Fails its first `failures` runs; then works until stopped, counting its items."""

    def __init__(self, name: str, failures: int, gate: threading.Event | None = None) -> None:
        self.name = name
        self.failures = failures
        self.runs = 0
        self.gate = gate
        self._stop = threading.Event()

    def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            if self.gate is not None:
                self.gate.wait(30)  # the test holds the failure until it has looked at /healthz
            raise RuntimeError(f"injected failure {self.runs}")
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def test_a_failing_worker_is_restarted_and_reported_until_it_runs() -> None:
    supervisor = Supervisor("test", backoff_s=0.2)
    flaky = supervisor.add(Flaky("flaky", failures=2))
    steady = supervisor.add(Flaky("steady", failures=0))
    supervisor.start()
    try:
        wait_for(
            lambda: flaky.runs == 3 and supervisor.status()["flaky"]["phase"] == "running", "the third run"
        )
        status = supervisor.status()
        assert status["flaky"]["restarts"] == 2
        assert status["flaky"]["last_error"] == "RuntimeError: injected failure 2"
        assert status["steady"] == {"phase": "running", "restarts": 0, "last_error": None}
        assert supervisor.down() == []
    finally:
        supervisor.stop()
    assert supervisor.status()["flaky"]["phase"] == "stopped" and steady.runs == 1


def test_healthz_says_503_naming_the_task_while_it_waits_to_restart() -> None:
    supervisor = Supervisor("test", backoff_s=0.5)
    gate = threading.Event()
    worker = supervisor.add(Flaky("consume-raw", failures=1, gate=gate))
    client = TestClient(
        create_app("t", health=lambda: {"ready": True}, supervisor=supervisor, max_body_bytes=4096)
    )
    supervisor.start()
    try:
        assert client.get("/healthz").status_code == 200
        gate.set()
        wait_for(lambda: supervisor.down() == ["consume-raw"], "the failure")
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["down"] == ["consume-raw"]
        assert response.json()["tasks"]["consume-raw"]["last_error"] == "RuntimeError: injected failure 1"
        wait_for(lambda: worker.runs == 2 and not supervisor.down(), "the restart")
        assert client.get("/healthz").status_code == 200
    finally:
        supervisor.stop()


def test_backoff_doubles_up_to_its_maximum() -> None:
    supervisor = Supervisor("test", backoff_s=0.05, max_backoff_s=0.2)
    worker = supervisor.add(Flaky("flaky", failures=5))
    starts: list[float] = []
    original = worker.run

    def timed() -> None:
        starts.append(time.monotonic())
        original()

    worker.run = timed  # type: ignore[method-assign]
    supervisor.start()
    try:
        wait_for(lambda: worker.runs == 6, "six runs")
    finally:
        supervisor.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.05, 0.1, 0.2, 0.2, 0.2: each wait at least its backoff (a slow machine only adds)
    assert all(gap >= want * 0.95 for gap, want in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True)), gaps


def test_a_worker_that_returns_on_its_own_is_finished_not_down() -> None:
    class OneShot:
        name = "one-shot"

        def run(self) -> None:
            return None

        def stop(self) -> None:
            return None

    supervisor = Supervisor("test")
    supervisor.add(OneShot())
    supervisor.start()
    wait_for(lambda: supervisor.status()["one-shot"]["phase"] == "finished", "the end of the run")
    assert supervisor.down() == []
    supervisor.stop()
