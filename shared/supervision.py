"""One supervisor for every service's background work.

Consume loops, serving's swapper, prediction log, shadow scorer and micro-batcher, the
registry's outbox relay, the trainer's worker and the monitor's registry calls are all
`Worker`s: `run()` does the work until `stop()` asks it to return, and raises when it cannot
go on. The `Supervisor` runs each on a thread of its own, logs a failure with its traceback,
restarts the worker after an exponential backoff (reset once a run has lasted a minute), and
says which task is down; `shared.http.create_app` turns that into a 503 from `/healthz` naming
the task. A worker keeps a unit of work until it has been done, so a restart loses nothing.

>>> class Once:
...     name, calls = "once", 0
...     def run(self):
...         Once.calls += 1
...         if Once.calls == 1:
...             raise RuntimeError("first run fails")
...     def stop(self): pass
>>> supervisor = Supervisor("doc", backoff_s=0.01)
>>> _ = supervisor.add(Once())
>>> supervisor.start(); supervisor.wait_settled(5.0); supervisor.stop()
True
>>> Once.calls, supervisor.status()["once"]["restarts"]
(2, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

TASK_UP = Gauge("ctloop_background_task_up", "1 while a background task runs, 0 while it is down", ["task"])
TASK_RESTARTS = Counter("ctloop_background_task_restarts_total", "Background task failures", ["task"])

W = TypeVar("W", bound="Worker")
TaskPhase = Literal["starting", "running", "restarting", "finished", "stopped"]


class Worker(Protocol):
    """Background work a supervisor runs: `run` until `stop` is called, raise on failure."""

    name: str

    def run(self) -> None: ...

    def stop(self) -> None:
        """Ask `run` to return soon; must not block."""


@dataclass
class TaskState:
    phase: TaskPhase = "starting"
    restarts: int = 0
    last_error: str | None = None

    @property
    def down(self) -> bool:
        return self.phase in ("starting", "restarting")


class Supervisor:
    """Starts, restarts and stops one service's workers, and reports their liveness."""

    def __init__(self, service: str, backoff_s: float = 0.5, max_backoff_s: float = 15.0) -> None:
        self.service = service
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        self._states: dict[str, TaskState] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def add(self, worker: W) -> W:
        """Register a worker (before `start`); returns it, for chaining."""
        if worker.name in self._states:
            raise ValueError(f"two background tasks named {worker.name!r}")
        self._workers.append(worker)
        self._states[worker.name] = TaskState()
        return worker

    def start(self) -> None:
        for worker in self._workers:
            thread = threading.Thread(
                target=self._keep_running, args=(worker,), name=f"{self.service}-{worker.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to stop, the last added first, and wait for each (bounded)."""
        self._stopping.set()
        for worker, thread in reversed(list(zip(self._workers, self._threads, strict=False))):
            worker.stop()
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("%s: %s did not stop within %.0fs", self.service, worker.name, timeout_s)

    def status(self) -> dict[str, dict[str, object]]:
        """Each task's phase, restart count and last error, by name."""
        with self._lock:
            return {
                name: {"phase": s.phase, "restarts": s.restarts, "last_error": s.last_error}
                for name, s in self._states.items()
            }

    def down(self) -> list[str]:
        """The names of the tasks that are not running now (starting or waiting to restart)."""
        with self._lock:
            return [name for name, s in self._states.items() if s.down]

    def wait_settled(self, timeout_s: float) -> bool:
        """True once no task is starting or restarting (for tests and start-up)."""
        deadline = time.monotonic() + timeout_s
        while self.down():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _set(self, name: str, phase: TaskPhase, error: str | None = None) -> None:
        with self._lock:
            state = self._states[name]
            state.phase = phase
            if error is not None:
                state.restarts += 1
                state.last_error = error
        TASK_UP.labels(name).set(1 if phase in ("running", "finished") else 0)

    def _keep_running(self, worker: Worker) -> None:
        backoff = self.backoff_s
        while not self._stopping.is_set():
            started = time.monotonic()
            self._set(worker.name, "running")
            try:
                worker.run()
            except Exception as exc:
                TASK_RESTARTS.labels(worker.name).inc()
                if time.monotonic() - started > 60:  # it worked for a while: a fresh failure
                    backoff = self.backoff_s
                self._set(worker.name, "restarting", f"{type(exc).__name__}: {exc}")
                log.exception("%s: %s failed; restarting in %.1fs", self.service, worker.name, backoff)
                self._stopping.wait(backoff)
                backoff = min(2 * backoff, self.max_backoff_s)
                continue
            self._set(worker.name, "stopped" if self._stopping.is_set() else "finished")
            return
        self._set(worker.name, "stopped")
