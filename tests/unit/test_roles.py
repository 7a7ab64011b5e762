"""Roles: the guard that checks a route's role before its body is read, and the credentials a
local stack makes, keeps and hands out per service."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from shared import credentials
from shared.http import RoleGuard
from shared.settings import ROLES

TOKENS = {"trainer": "t" * 20, "operator": "o" * 20, "reader": ""}


def guarded() -> tuple[RoleGuard, list[str]]:
    app = FastAPI()
    reached: list[str] = []

    @app.post("/write")
    async def write(request: Request) -> dict[str, str]:
        reached.append(request.state.role)
        return {"role": request.state.role}

    return RoleGuard(app, TOKENS, [("POST", "/write", ("operator",), "writing")]), reached


def call(guard: RoleGuard, authorization: str | None) -> tuple[int, bytes, bool]:
    """(status, body, whether the body was read)."""
    headers = [(b"content-length", b"5")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    scope = {"type": "http", "method": "POST", "path": "/write", "headers": headers, "query_string": b""}
    read, sent = [False], []

    async def receive() -> dict[str, object]:
        read[0] = True
        return {"type": "http.request", "body": b"hello", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))  # type: ignore[arg-type]
    return int(sent[0]["status"]), bytes(sent[1]["body"]), read[0]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer ", 401),  # the unset reader token must not match an empty one
        ("Basic " + "o" * 20, 401),
        ("Bearer wrong-token-entirely", 401),
        ("Bearer " + "t" * 20, 403),  # a real role, not this route's
        ("Bearer " + "o" * 20, 200),
    ],
)
def test_guard_checks_the_role_before_the_body(authorization: str | None, status: int) -> None:
    guard, reached = guarded()
    answer, body, read = call(guard, authorization)
    assert answer == status
    if status == 200:
        assert reached == ["operator"]
    else:
        assert not read and not reached  # refused before any of the body was read
    if status == 403:
        assert b"the trainer role may not do writing (operator only)" in body


def test_a_stack_makes_its_credentials_once_and_keeps_them_private(tmp_path: Path) -> None:
    made, path = credentials.for_run({}, tmp_path)
    assert path == tmp_path / "credentials.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {credentials.token_variable(r) for r in ROLES} <= set(made)
    assert len(set(made.values())) == len(made)  # every token different
    again, _ = credentials.for_run({}, tmp_path)
    assert again == made  # a restart on the same folder keeps the key its versions are signed with

    configured = {"CTLOOP_TRAINER_TOKEN": "mine-0123456789abcdef"}
    assert credentials.for_run(configured, tmp_path / "other") == (configured, None)
    assert credentials.for_run({"CTLOOP_DEV_MODE": "true"}, tmp_path / "dev") == ({}, None)


def test_each_service_gets_only_its_credentials() -> None:
    env = {**credentials.generate(), "CTLOOP_LEGACY_SIGNING_KEY": "old", "PATH": "/bin"}
    serving = credentials.for_service(env, "serving")
    assert set(serving) == {"PATH", "CTLOOP_READER_TOKEN", "CTLOOP_SIGNING_PUBLIC_KEY"}
    registry = credentials.for_service(env, "registry")
    assert "CTLOOP_SIGNING_PRIVATE_KEY" in registry and "CTLOOP_PRODUCER_TOKEN" not in registry
    for service in ("ingest", "trainer", "monitor", "serving", "console"):
        held = credentials.for_service(env, service)
        assert "CTLOOP_SIGNING_PRIVATE_KEY" not in held and "CTLOOP_OPERATOR_TOKEN" not in held
