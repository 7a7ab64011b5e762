"""Credentials of a ctloop deployment: one bearer token per role and the registry's Ed25519 key
pair, as environment variables — and which service gets which.

`ctloop credentials` prints a new set; `ctloop up` and `ctloop demo` make one for their run when
none is configured (`credentials.env` in the data folder, readable only by its owner, reused
when the stack starts again on the same folder: the registry's versions are signed with its
key) and give each service only the variables it needs (`for_service`), as the compose file
and the Kubernetes manifests do.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shared.settings import ROLES
from shared.signing import generate_keypair

FILE_NAME = "credentials.env"
PRIVATE_KEY = "CTLOOP_SIGNING_PRIVATE_KEY"
PUBLIC_KEY = "CTLOOP_SIGNING_PUBLIC_KEY"
LEGACY_KEY = "CTLOOP_LEGACY_SIGNING_KEY"


def token_variable(role: str) -> str:
    return f"CTLOOP_{role.upper()}_TOKEN"


VARIABLES = (*(token_variable(role) for role in ROLES), PRIVATE_KEY, PUBLIC_KEY, LEGACY_KEY)
"""Every credential variable; `for_service` removes the ones a service does not need."""

NEEDS: dict[str, frozenset[str]] = {
    "registry": frozenset(
        {*(token_variable(r) for r in ("trainer", "operator", "monitor", "reader")), PRIVATE_KEY, LEGACY_KEY}
    ),
    "ingest": frozenset({token_variable("producer")}),
    "trainer": frozenset({token_variable("trainer"), PUBLIC_KEY}),
    "monitor": frozenset({token_variable("monitor"), token_variable("reader")}),
    "serving": frozenset({token_variable("reader"), PUBLIC_KEY}),
    "console": frozenset({token_variable("reader")}),
}
"""What each service holds. The operator token is the registry's alone: the trainer and the
console ask the registry whether a caller's token is the operator's."""


def generate() -> dict[str, str]:
    """A new set: a random token for every role and a new key pair."""
    private, public = generate_keypair()
    tokens = {token_variable(role): secrets.token_urlsafe(32) for role in ROLES}
    return {**tokens, PRIVATE_KEY: private, PUBLIC_KEY: public}


def write(path: Path, credentials: dict[str, str]) -> None:
    """Write `credentials` as `NAME=value` lines to a new file only its owner may read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("# ctloop credentials for this data folder (docs/security.md); keep it private\n")
        file.writelines(f"{name}={value}\n" for name, value in credentials.items())


def read(path: Path) -> dict[str, str]:
    """The `NAME=value` lines of a credentials file."""
    found = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found[name.strip()] = value.strip()
    return found


def dev_mode(env: dict[str, str]) -> bool:
    """Whether `env` turns dev mode on (as pydantic reads a boolean variable)."""
    return env.get("CTLOOP_DEV_MODE", "").strip().lower() in ("1", "true", "yes", "on", "t", "y")


def token_of(env: dict[str, str], role: str) -> str:
    """The token `role` runs with in `env` (in dev mode an unset one but the reader's is the
    public placeholder, as `CommonSettings.token` says)."""
    value = env.get(token_variable(role), "").strip()
    return value or (f"dev-{role}-token" if dev_mode(env) and role != "reader" else "")


def for_run(env: dict[str, str], data_dir: Path) -> tuple[dict[str, str], Path | None]:
    """The credentials a local stack runs with: the configured ones when any is set (or dev
    mode is on), else those of `data_dir/credentials.env`, made now if it does not exist. The
    file's path when one is used."""
    configured = any(env.get(name) for name in VARIABLES)
    if configured or dev_mode(env):
        return {name: env[name] for name in VARIABLES if env.get(name)}, None
    path = data_dir / FILE_NAME
    if not path.exists():
        write(path, generate())
    return read(path), path


def for_service(env: dict[str, str], service: str) -> dict[str, str]:
    """`env` without the credentials `service` does not need."""
    needed = NEEDS.get(service, frozenset())
    return {name: value for name, value in env.items() if name not in VARIABLES or name in needed}
