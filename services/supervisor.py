"""`ctloop up`: the embedded broker (unless a bootstrap server is configured) and the
services (the loop's five and the console) as child processes, with prefixed logs, a
readiness wait and a clean shutdown.

A service can run as several replicas (`--replicas serving=2,trainer=2`): each on its own
port, named `serving`, `serving-2`, … (its `CTLOOP_INSTANCE`), with a data folder of its own
beside the first one's. Nothing balances HTTP load between them: that is the platform's job (a
Kubernetes Service, nginx), so `urls(service)` lists them for clients to spread over. Registry
replicas share one PostgreSQL database (`CTLOOP_REGISTRY_DB_URL`) and keep their artifacts in
it; the other services are given every registry replica's URL and move to the next one when
one does not answer.

Children get SIGTERM when the supervisor stops, and the kernel sends it to them too if the
supervisor itself dies (PR_SET_PDEATHSIG, which each child asks for as it starts:
`die_with_supervisor`), so no orphan outlives it.
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
MAX_REPLICAS = {"console": 1}
"""The console's history is one process's follower: it does not scale out."""


def parse_replicas(text: str) -> dict[str, int]:
    """`monitor=3,trainer=2` -> {"monitor": 3, "trainer": 2}, with a clear error for anything
    else (an unknown service, a count below 1 or above what the service allows).

    >>> parse_replicas("monitor=3, serving=2")
    {'monitor': 3, 'serving': 2}
    >>> parse_replicas("serving=0")
    Traceback (most recent call last):
    ValueError: 'serving=0': expected serving=N with N a whole number from 1
    >>> parse_replicas("console=2")
    Traceback (most recent call last):
    ValueError: console runs at most 1 replica(s)
    """
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, equals, count = part.partition("=")
        if service not in SERVICES:
            raise ValueError(f"{service!r} is not a service; the services are {', '.join(SERVICES)}")
        if not equals or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{part!r}: expected {service}=N with N a whole number from 1")
        if int(count) > MAX_REPLICAS.get(service, 16):
            raise ValueError(f"{service} runs at most {MAX_REPLICAS.get(service, 16)} replica(s)")
        counts[service] = int(count)
    return counts


def replica_names(service: str, count: int) -> list[str]:
    """The process names of a service's replicas: the first keeps the service's name."""
    return [service if n == 1 else f"{service}-{n}" for n in range(1, count + 1)]


def service_of(name: str) -> str:
    """The service a replica (process) name belongs to."""
    base, _, number = name.rpartition("-")
    return base if number.isdigit() and base in SERVICES else name


class StackError(RuntimeError):
    """The stack could not be brought up."""


SUPERVISOR_PID = "CTLOOP_SUPERVISOR_PID"
"""Set in a child's environment: the process it must not outlive."""


def die_with_supervisor() -> None:
    """In a process the supervisor started: be sent SIGTERM when the supervisor dies.

    NOTE: asked for here, after exec, not in a `preexec_fn`: code run between fork and exec
    in a threaded parent is unsafe, and a pytest process holding gRPC's poller thread saw a
    child abort there (`epoll_wait error: Bad file descriptor`, exit -6). Without a
    `preexec_fn`, `subprocess` also forks with vfork, which runs no fork handler."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(supervisor):  # it died before we asked: nobody would send it
        os.kill(os.getpid(), signal.SIGTERM)


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
        replicas: dict[str, int] | None = None,
    ) -> None:
        """`launcher` is the `ctloop` command the services run as (`… run <service>`): this
        interpreter by default; another environment's `ctloop` script to run what it holds.
        `replicas`: processes per service (1 where not given)."""
        self.env = {**os.environ, **(env or {}), SUPERVISOR_PID: str(os.getpid())}
        self.launcher = list(launcher)
        self.cwd = cwd
        self.out = out or sys.stdout
        self.services = services
        self.log_filter = log_filter
        self.broker: EmbeddedBroker | None = None
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.replicas = {s: (replicas or {}).get(s, 1) for s in SERVICES}
        if self.replicas["registry"] > 1 and not self.env.get("CTLOOP_REGISTRY_DB_URL", "").startswith(
            "postgresql"
        ):
            raise StackError(
                "registry replicas share one PostgreSQL database: set CTLOOP_REGISTRY_DB_URL "
                "(e.g. postgresql+psycopg://user@host:5432/ctloop)"
            )
        self.names = {s: replica_names(s, self.replicas[s]) for s in SERVICES}
        """Each service's replica (process) names."""
        self.ports = {
            name: free_port() if free_ports or name != service else self._configured_port(service)
            for service, names in self.names.items()
            for name in names
        }
        grpc_base = int(self.env.get("CTLOOP_SERVING_GRPC_PORT", DEFAULT_GRPC_PORT))
        self.grpc_ports = {
            name: free_port() if free_ports or n else grpc_base
            for n, name in enumerate(self.names["serving"])
        }
        self.grpc_port = self.grpc_ports["serving"]
        self._print_lock = threading.Lock()
        self.credentials_file: Path | None = None
        self._data_dir = Path("var")

    def token(self, role: Role) -> str:
        """The bearer token of `role` that this stack's services run with."""
        return credentials.token_of(self.env, role)

    def auth(self, role: Role = "reader") -> dict[str, str]:
        """An Authorization header with `role`'s token (none when the role has no token)."""
        token = self.token(role)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _configured_port(self, service: str) -> int:
        return int(self.env.get(f"CTLOOP_{service.upper()}_PORT", DEFAULT_PORTS[service]))

    def url(self, name: str) -> str:
        """The URL of a service's first replica, or of the replica `name`."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def urls(self, service: str) -> list[str]:
        """Every replica's URL, for clients to spread their requests over."""
        return [self.url(name) for name in self.names[service]]

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
        for service in ("trainer", "monitor"):
            self.env[f"CTLOOP_{service.upper()}_URL"] = self.url(service)
        self.env["CTLOOP_REGISTRY_URL"] = ",".join(self.urls("registry"))
        if self.replicas["registry"] > 1:
            self.env.setdefault("CTLOOP_REGISTRY_ARTIFACT_URL", "database")
        if self.replicas["monitor"] > 1:  # each worker's windows see 1/N of the records (RESULTS.md)
            self.env.setdefault("CTLOOP_MONITOR_WINDOW", str(max(50, 500 // self.replicas["monitor"])))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self._data_dir = data_dir
        for service in self.services:
            for name in self.names[service]:
                self.spawn(name)
        self.wait_ready(timeout_s)

    def _replica_env(self, name: str) -> dict[str, str]:
        """What a replica has of its own: its name as its instance (once there are several),
        and beyond the first, its port and data folder."""
        service = service_of(name)
        if name == service:
            return {"CTLOOP_INSTANCE": name} if self.replicas[service] > 1 else {}
        own = {
            f"CTLOOP_{service.upper()}_PORT": str(self.ports[name]),
            "CTLOOP_INSTANCE": name,
            "CTLOOP_DATA_DIR": str(self._data_dir / "replicas" / name),
        }
        if service == "serving":
            own["CTLOOP_SERVING_GRPC_PORT"] = str(self.grpc_ports[name])
        return own

    def spawn(self, name: str) -> subprocess.Popen[str]:
        """Start (or restart) one service process (a replica's name: `serving-2`)."""
        service = service_of(name)
        process = subprocess.Popen(
            [*self.launcher, "run", service],
            env=credentials.for_service({**self.env, **self._replica_env(name)}, service),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.processes[name] = process
        assert process.stdout is not None
        threading.Thread(target=self._pump, args=(name, process.stdout), daemon=True).start()
        return process

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = {name for service in self.services for name in self.names[service]}
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                for name in sorted(waiting):
                    process = self.processes[name]
                    if process.poll() is not None:
                        raise StackError(f"{name} exited with code {process.returncode} during start-up")
                    try:
                        status = client.get(f"{self.url(name)}/healthz").status_code
                    except httpx.HTTPError:
                        continue
                    if status == 200 or service_of(name) in READY_WHEN_ALIVE:
                        waiting.discard(name)
                        self._say("ctloop", f"{name} up at {self.url(name)}")
                        if name in self.grpc_ports:
                            self._say("ctloop", f"{name} gRPC at 127.0.0.1:{self.grpc_ports[name]}")
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


def run_forever(stack: Stack, announce: str | None = None) -> int:
    """Block until Ctrl-C or SIGTERM (or a service dies), then stop the stack. `announce` is
    printed once the signals are caught: a SIGTERM sent on reading it stops the stack cleanly
    (printed before, it could arrive while the default action still killed the supervisor)."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if announce is not None:
        print(announce, flush=True)
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
