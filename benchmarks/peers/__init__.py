"""Peers the benchmarks compare ctloop with, each installed in its own virtualenv under
`.venv-peers/<name>` by `make peers` (their dependencies would clash with ctloop's)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / ".venv-peers"


def peer_python(name: str) -> Path | None:
    """The peer's interpreter, or None when `make peers` has not installed it."""
    python = ROOT / name / "bin" / "python"
    return python if (ROOT / name / ".installed").exists() and python.exists() else None
