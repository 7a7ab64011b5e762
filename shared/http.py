"""What every service's HTTP side has in common: /healthz, /metrics, and one error layer.

Services raise `ServiceError` subclasses with a status code and a message; `create_app`
installs the one handler that turns them into `{"detail": ...}` JSON responses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

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


class Unavailable(ServiceError):
    status_code = 503


class BadRequest(ServiceError):
    status_code = 400


class Unprocessable(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


def create_app(
    title: str,
    health: Callable[[], dict[str, object]],
    supervisor: Supervisor | None = None,
    **kwargs: object,
) -> FastAPI:
    """A FastAPI app with `GET /livez` (200 while the process serves), `GET /healthz`
    (readiness: 200 when `health()["ready"]` and every background task of `supervisor` runs,
    else 503 with the state and `down`: the names of the tasks that do not) and `GET /metrics`
    (Prometheus text format)."""
    # 422 bodies are ctloop's field errors (ServiceError), not only FastAPI's validation errors:
    # the documented schema says so, for clients and for the fuzz test that checks responses.
    app = FastAPI(title=title, responses={422: {"model": ErrorResponse}}, **kwargs)  # type: ignore[arg-type]

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
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run an app with uvicorn until SIGINT or SIGTERM."""
    tune_gc()
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)
