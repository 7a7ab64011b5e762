"""What every service's HTTP side has in common: /healthz, /metrics, and one error layer.

Services raise `ServiceError` subclasses with a status code and a message; `create_app`
installs the one handler that turns them into `{"detail": ...}` JSON responses.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.gc_tuning import tune_gc
from shared.supervision import Supervisor


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body: a message, or a list of what was wrong (field and reason for
    each invalid field; FastAPI's own request validation gives `loc`, `msg`, `type`)."""

    detail: str | list[dict[str, Any]]


class ServiceError(Exception):
    """An error with a meaning for the caller: an HTTP status and a message."""

    status_code = 500

    def __init__(self, detail: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.detail = detail
        self.headers = headers


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class Unavailable(ServiceError):
    status_code = 503


class BadRequest(ServiceError):
    status_code = 400


class Unprocessable(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class CompactJSONResponse(JSONResponse):
    """A JSON response written by msgspec: for hot paths whose content is already plain JSON
    (dicts, lists, numbers, strings, string enums).

    NOTE: 5.3 -> 1.5 µs for a one-row prediction's response (in-process); a NaN is written as
    `null`, where Starlette's JSONResponse raises."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class DirectRoute(APIRoute):
    """A route FastAPI documents like any other (from its endpoint's signature, response model
    and `openapi_extra`), whose requests go straight to its endpoint: the endpoint takes the
    Starlette `Request` and returns the `Response`. Nothing is parsed, validated or serialized
    around it; a `ServiceError` it raises goes to the app's handler like any route's.

    For the prediction routes, where FastAPI's own work around the endpoint (dependencies,
    its exception wrapper, the response model) cost more than the prediction. Use
    `direct_routes_first` once every route is added.

    NOTE: one-row `/v1` requests went from ~4,850 to ~6,050 requests/s on one core, and to
    ~6,330 with the direct routes matched first (alternating runs, benchmarks/bench_serving.py)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = self._direct

    async def _direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def direct_routes_first(app: FastAPI) -> None:
    """Moves the app's `DirectRoute`s (in their order) ahead of its other routes: routes are
    matched in order, the documentation, health and metrics routes come first otherwise, and
    matching those seven cost ~5% of a one-row prediction."""
    app.router.routes.sort(key=lambda route: not isinstance(route, DirectRoute))


class BodyTooLarge(HTTPException):
    """Raised while a body is read, the moment it passes its limit (FastAPI passes an
    `HTTPException` from body parsing through, where any other error would become a 400)."""

    def __init__(self, limit: int, length: int | None = None) -> None:
        size = f"body of {length} bytes" if length is not None else "body"
        super().__init__(413, f"{size} exceeds the limit of {limit} bytes")


LargerBody = tuple[str, str, int]
"""(HTTP method, path regex, limit): a route that takes bodies larger than the app's limit."""


class BodyLimit:
    """ASGI middleware: every request body is bounded before it is read.

    A `Content-Length` over the limit is answered 413 at once, without reading the body (a
    client that sent `Expect: 100-continue` never sends it). A body without a length (chunked)
    is counted as it streams in, and the reader gets `BodyTooLarge` the moment it passes the
    limit, so no route ever holds more than the limit in memory. On a keep-alive connection
    uvicorn reads and discards the rest of the body after the 413; a client that sends its
    whole body before reading and asks to close the connection (Python's urllib) has the rest
    drained first (`DRAIN_BYTES`), so it reads the 413 instead of a reset.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: Sequence[LargerBody] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [(method, re.compile(path), limit) for method, path, limit in larger]

    def limit(self, scope: Scope) -> int:
        for method, path, limit in self.larger:
            if scope["method"] == method and path.fullmatch(scope["path"]):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        headers = dict(scope["headers"])
        announced = headers.get(b"content-length", b"")
        # 19 digits at most: int() of a length of thousands of digits would raise (a 500)
        length = int(announced) if announced.isdigit() and len(announced) < 19 else None
        if (length is not None and length > limit) or (announced.isdigit() and length is None):
            if length is not None and _closes_after(headers) and length <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            await _refuse(send, BodyTooLarge(limit, length))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if _closes_after(headers) and message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES - received)
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # raised where no handler turned it into a response
            if started:
                raise
            await _refuse(send, exc)


DRAIN_BYTES = 256 * 1024 * 1024
"""The most of a refused body read (and thrown away) before the 413 on a connection that closes
after it. NOTE: uvicorn closes such a connection (`Connection: close`, which Python's urllib
always sends) as soon as the response is out; if body bytes are still arriving, the close
resets the connection and the client never reads the 413 (seen with a 66 MB body). Reading
costs time, never memory; a larger body is refused at once (the client sees the reset)."""


def _closes_after(headers: dict[bytes, bytes]) -> bool:
    """Whether uvicorn closes the connection after the response, and the client sends its body
    without waiting for an answer (no `Expect: 100-continue`)."""
    if headers.get(b"expect", b"").lower() == b"100-continue":
        return False
    return b"close" in headers.get(b"connection", b"").lower()


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a body, at most `budget` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        budget -= len(message.get("body", b""))


async def _refuse(send: Send, exc: BodyTooLarge) -> None:
    await _respond(send, 413, exc.detail, [])


async def _respond(send: Send, status: int, detail: object, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


RoleRule = tuple[str, str, tuple[str, ...], str]
"""(HTTP method, path regex, roles allowed, what for): a guarded route. The first rule that
matches a request decides; a request no rule matches is open."""


class RoleGuard:
    """ASGI middleware: a guarded route needs `Authorization: Bearer <token>` of one of its
    roles, checked before any of the body is read. A token that is no role's gets 401; a role
    the route does not allow gets 403 naming it. The role that matched is `request.state.role`
    for routes that decide more finely (the registry lets the monitor promote only its
    challenger). Tokens are compared in constant time; an unset (empty) token is no role's, so
    a bare `Bearer ` matches nothing."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str], rules: Sequence[RoleRule]) -> None:
        self.app = app
        self.tokens = {role: token.encode() for role, token in tokens.items() if token}
        self.rules = [(method, re.compile(path), roles, what) for method, path, roles, what in rules]

    def role_of(self, authorization: bytes) -> str | None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        found = None
        for role, expected in self.tokens.items():  # every one compared: no early exit to time
            if hmac.compare_digest(token, expected):
                found = role
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for method, path, roles, what in self.rules:
            if scope["method"] == method and path.fullmatch(scope["path"]):
                headers = dict(scope["headers"])
                role = self.role_of(headers.get(b"authorization", b""))
                if role is None or role not in roles:
                    if _closes_after(headers):
                        await _drain(receive, DRAIN_BYTES)
                    await _refuse_role(send, role, roles, what)
                    return
                scope.setdefault("state", {})["role"] = role
                break
        await self.app(scope, receive, send)


async def _refuse_role(send: Send, role: str | None, roles: tuple[str, ...], what: str) -> None:
    allowed = " or ".join(roles)
    if role is None:
        status, detail = 401, f"{what} needs a valid bearer token ({allowed})"
    else:
        status, detail = 403, f"the {role} role may not do {what} ({allowed} only)"
    await _respond(send, status, detail, [(b"www-authenticate", b"Bearer")] if status == 401 else [])


def create_app(
    title: str,
    health: Callable[[], dict[str, object]],
    supervisor: Supervisor | None = None,
    *,
    max_body_bytes: int,
    larger_bodies: Sequence[LargerBody] = (),
    tokens: dict[str, str] | None = None,
    guarded: Sequence[RoleRule] = (),
    **kwargs: object,
) -> FastAPI:
    """A FastAPI app with `GET /livez` (200 while the process serves), `GET /healthz`
    (readiness: 200 when `health()["ready"]` and every background task of `supervisor` runs,
    else 503 with the state and `down`: the names of the tasks that do not) and `GET /metrics`
    (Prometheus text format). Request bodies are bounded by `max_body_bytes` (`BodyLimit`),
    except on the routes of `larger_bodies`, which have their own bound. The `guarded` routes
    need a bearer token of one of their roles (`RoleGuard`; `tokens`: role -> token)."""
    # 422 bodies are ctloop's field errors (ServiceError), not only FastAPI's validation errors:
    # the documented schema says so, for clients and for the fuzz test that checks responses.
    app = FastAPI(
        title=title,
        responses={413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
        # NOTE: off: ctloop's metrics are Prometheus's and it configures no OpenTelemetry, yet
        # FastAPI (0.165) looked up the global OpenTelemetry providers on every request: one-row
        # /v1 went from ~6,420 to ~6,670 requests/s on one core without it (alternating runs).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **kwargs,  # type: ignore[arg-type]
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, larger=larger_bodies)
    if guarded:  # outermost: a request without the role is refused before anything else
        app.add_middleware(RoleGuard, tokens=tokens or {}, rules=guarded)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/livez", tags=["ops"], summary="Liveness: the process answers")
    def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/healthz", tags=["ops"], summary="Readiness of this service, with its state")
    def healthz() -> JSONResponse:
        state = health()
        if supervisor is not None:
            state["tasks"] = supervisor.status()
            if down := supervisor.down():
                state["ready"], state["down"] = False, down
        return JSONResponse(state, status_code=200 if state.get("ready") else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return app


def _registry() -> CollectorRegistry:
    """This process's metrics; in a process of several sharing a port (a service's workers,
    `PROMETHEUS_MULTIPROC_DIR` set), every worker's, summed (gauges with a `pid` label; a
    worker that died keeps its last gauge values there, its counters stay in the sums)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run an app with uvicorn until SIGINT or SIGTERM."""
    tune_gc()
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)
