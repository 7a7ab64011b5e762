"""`ctloop up` as a user runs it: it comes up, and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return f"{pid} (gone)"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# Ctrl-C (SIGINT) in `make test-long` only: SIGTERM is what compose and Kubernetes send.
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.long)])
def test_up_then_stop_leaves_no_orphans(tmp_path: Path, stop_signal: signal.Signals) -> None:
    env = {**os.environ, "CTLOOP_DATA_DIR": str(tmp_path)}
    env.pop("CTLOOP_KAFKA_BOOTSTRAP", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--free-ports"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "ctloop is up" in line or time.monotonic() > deadline:
            break
    assert any("ctloop is up" in line for line in lines), "".join(lines[-40:])
    below = descendants(process.pid)
    assert len(below) >= 6  # the broker and five services (faust may add helpers)
    process.send_signal(stop_signal)
    try:
        # The stack gives each service 15 s and the broker 10 s; the rest is a slow machine.
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired as exc:
        # Say which process held the stop up, and what the stack said last (seen once, under
        # a full `make test`, and not reproduced since).
        stuck = [_cmdline(pid) for pid in sorted(below | {process.pid}) if alive(pid)]
        process.kill()
        output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        said = [line for line in output.splitlines() if "HTTP Request" not in line]
        raise AssertionError(
            f"not stopped after 120 s; still alive: {stuck}; last said: {said[-30:]}"
        ) from exc
    assert process.returncode == 0
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in below if alive(pid)]
