"""`ctloop up`: the embedded broker (unless a bootstrap server is configured) and the
services (the loop's five and the console) as child processes, with prefixed logs, a
readiness wait and a clean shutdown.

Children get SIGTERM when the supervisor stops, and the kernel sends it to them too if the
supervisor itself dies (PR_SET_PDEATHSIG), so no orphan outlives it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import httpx

from shared import credentials
from shared.broker import EmbeddedBroker, free_port
from shared.settings import CommonSettings, Role
from shared.topics import ensure_topics

LOOP_SERVICES = ("registry", "ingest", "trainer", "monitor", "serving")
"""The services the loop needs; tests that do not look at the console run only these."""
SERVICES = (*LOOP_SERVICES, "console")
DEFAULT_PORTS = {
    "serving": 8000,
    "ingest": 8001,
    "registry": 8002,
    "trainer": 8003,
    "monitor": 8004,
    "console": 8005,
}
DEFAULT_GRPC_PORT = 8081  # serving's gRPC API
# Serving answers 503 until a champion exists (cold start): alive is enough to be "up".
READY_WHEN_ALIVE = {"serving"}


class StackError(RuntimeError):
    """The stack could not be brought up."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Stack:
    """The services (and the broker if needed) as child processes."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        free_ports: bool = False,
        out: TextIO | None = None,
        services: tuple[str, ...] = SERVICES,
        log_filter: Callable[[str, str], bool] | None = None,
        launcher: Sequence[str] = (sys.executable, "-m", "services.cli"),
        cwd: Path | None = None,
    ) -> None:
        """`launcher` is the `ctloop` command the services run as (`… run <service>`): this
        interpreter by default; another environment's `ctloop` script to run what it holds."""
        self.env = {**os.environ, **(env or {})}
        self.launcher = list(launcher)
        self.cwd = cwd
        self.out = out or sys.stdout
        self.services = services
        self.log_filter = log_filter
        self.broker: EmbeddedBroker | None = None
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.ports = {s: free_port() if free_ports else self._configured_port(s) for s in SERVICES}
        self.grpc_port = (
            free_port() if free_ports else int(self.env.get("CTLOOP_SERVING_GRPC_PORT", DEFAULT_GRPC_PORT))
        )
        self._print_lock = threading.Lock()
        self.credentials_file: Path | None = None

    def token(self, role: Role) -> str:
        """The bearer token of `role` that this stack's services run with."""
        return credentials.token_of(self.env, role)

    def auth(self, role: Role = "reader") -> dict[str, str]:
        """An Authorization header with `role`'s token (none when the role has no token)."""
        token = self.token(role)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _configured_port(self, service: str) -> int:
        return int(self.env.get(f"CTLOOP_{service.upper()}_PORT", DEFAULT_PORTS[service]))

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def grpc_target(self) -> str:
        """Serving's gRPC address, as gRPC clients take it (`host:port`)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def bootstrap(self) -> str:
        return self.env["CTLOOP_KAFKA_BOOTSTRAP"]

    def _say(self, name: str, line: str) -> None:
        if self.log_filter is not None and not self.log_filter(name, line):
            return
        with self._print_lock:
            self.out.write(f"{name:>8} | {line}")
            if not line.endswith("\n"):
                self.out.write("\n")
            self.out.flush()

    def _pump(self, name: str, stream: TextIO) -> None:
        for line in stream:
            self._say(name, line)

    def start(self, timeout_s: float = 120.0) -> Stack:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        if "CTLOOP_KAFKA_BOOTSTRAP" not in self.env:
            self.broker = EmbeddedBroker().start()
            self.env["CTLOOP_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
            self._say("ctloop", f"embedded broker (Tansu) on {self.broker.bootstrap}")
        data_dir = Path(self.env.get("CTLOOP_DATA_DIR", "var"))
        if not data_dir.is_absolute():
            data_dir = (self.cwd or Path.cwd()) / data_dir
        found, self.credentials_file = credentials.for_run(self.env, data_dir)
        self.env.update(found)
        if self.credentials_file is not None:
            self._say("ctloop", f"credentials of this run (tokens, signing keys): {self.credentials_file}")
        settings = CommonSettings(kafka_bootstrap=self.bootstrap)
        ensure_topics(self.bootstrap, int(self.env.get("CTLOOP_TOPIC_PARTITIONS", settings.topic_partitions)))
        for service in SERVICES:
            self.env[f"CTLOOP_{service.upper()}_PORT"] = str(self.ports[service])
        self.env["CTLOOP_SERVING_GRPC_PORT"] = str(self.grpc_port)
        for service in ("registry", "trainer", "monitor"):
            self.env[f"CTLOOP_{service.upper()}_URL"] = self.url(service)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        for service in self.services:
            self.spawn(service)
        self.wait_ready(timeout_s)

    def spawn(self, service: str) -> subprocess.Popen[str]:
        """Start (or restart) one service process."""
        process = subprocess.Popen(
            [*self.launcher, "run", service],
            env=credentials.for_service(self.env, service),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent,
        )
        self.processes[service] = process
        assert process.stdout is not None
        threading.Thread(target=self._pump, args=(service, process.stdout), daemon=True).start()
        return process

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = set(self.services)
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                for service in sorted(waiting):
                    process = self.processes[service]
                    if process.poll() is not None:
                        raise StackError(f"{service} exited with code {process.returncode} during start-up")
                    try:
                        status = client.get(f"{self.url(service)}/healthz").status_code
                    except httpx.HTTPError:
                        continue
                    if status == 200 or service in READY_WHEN_ALIVE:
                        waiting.discard(service)
                        self._say("ctloop", f"{service} up at {self.url(service)}")
                        if service == "serving":
                            self._say("ctloop", f"serving gRPC at {self.grpc_target}")
                if waiting and time.monotonic() > deadline:
                    raise StackError(f"not ready after {timeout_s:.0f}s: {sorted(waiting)}")
                if waiting:
                    time.sleep(0.25)

    def stop(self, timeout_s: float = 15.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout_s
        for service, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say("ctloop", f"{service} did not stop within {timeout_s:.0f}s; killing it")
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_forever(stack: Stack) -> int:
    """Block until Ctrl-C or SIGTERM (or a service dies), then stop the stack."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = 0
    while not stopping.wait(0.5):
        dead = [s for s, p in stack.processes.items() if p.poll() is not None]
        if dead:
            stack._say("ctloop", f"{dead} exited; stopping the stack")
            code = 1
            break
    stack._say("ctloop", "stopping")
    stack.stop()
    return code
