"""Ingest's HTTP API: `POST /v1/records`, `POST /v1/labels`, `GET /v1/schema`.

A batch is not all-or-nothing: the response lists what was accepted, what was a duplicate
of a recent id, and each rejected item with its index, field and reason. An item is reported
accepted only once the broker acknowledged it (acks=all); if the broker cannot take writes
the answer is 503 with Retry-After and nothing is reported accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from kafka.errors import KafkaError
from prometheus_client import Histogram
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.types import Lifespan

from services.ingest.intake import Intake, Outcome
from shared.http import BadRequest, TooLarge, Unavailable, create_app
from shared.json_input import MalformedJSON, loads_json
from shared.kafka import TryLater
from shared.schema import DatasetSchema
from shared.settings import IngestSettings
from shared.supervision import Supervisor
from shared.validation import FieldError

LATENCY = Histogram("ctloop_ingest_request_seconds", "Ingest request latency", ["route"])


class IntakeResponse(BaseModel):
    accepted: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    rejected: list[FieldError]


async def _parse_body(request: Request, settings: IngestSettings, key: str) -> list[Any]:
    # The size was bounded before the body was read (shared.http's body limit).
    body = await request.body()
    if "ndjson" in request.headers.get("content-type", ""):
        items = []
        for number, line in enumerate(body.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(loads_json(line))
                except MalformedJSON as exc:
                    column = f", column {exc.column}" if exc.column is not None else ""
                    raise BadRequest(f"malformed JSON on line {number}{column}: {exc.reason}") from exc
    else:
        try:
            data = loads_json(body)
        except MalformedJSON as exc:
            raise BadRequest(str(exc)) from exc
        items = data[key] if isinstance(data, dict) and key in data else [data]
        if not isinstance(items, list):
            raise BadRequest(f"{key!r} must be a list")
    if len(items) > settings.ingest_max_batch:
        raise TooLarge(f"{len(items)} items exceed the batch limit of {settings.ingest_max_batch}")
    return items


def build_app(
    settings: IngestSettings,
    schema: DatasetSchema,
    intake: Intake,
    ready: Callable[[], bool],
    supervisor: Supervisor | None = None,
    lifespan: Lifespan[FastAPI] | None = None,
) -> FastAPI:
    """`lifespan`: what the process does when the server starts and stops."""
    app = create_app(
        "ctloop ingest",
        lifespan=lifespan,
        health=lambda: {"ready": ready(), "service": "ingest"},
        supervisor=supervisor,
        max_body_bytes=settings.ingest_max_body_bytes,
        tokens={"producer": settings.token("producer")},
        guarded=[
            ("POST", r"/v1/records", ("producer",), "sending records"),
            ("POST", r"/v1/labels", ("producer",), "sending labels"),
        ],
    )
    # NOTE: one thread validates and sends for every request. With a thread per request, the
    # threads fought kafka-python's per-partition locks and the GIL (35% of samples at 4
    # concurrent requests) and the service ran 5x slower; validation gains nothing from threads.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")

    async def on_worker(
        function: Callable[[list[Any], str], Outcome], items: list[Any], origin: str
    ) -> Outcome:
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, function, items, origin)
        except (KafkaError, TryLater) as exc:  # nothing was accepted: the client retries
            raise Unavailable(
                f"the broker cannot take writes now ({type(exc).__name__}: {exc}); retry later",
                headers={"Retry-After": str(settings.ingest_retry_after_s)},
            ) from exc

    async def respond(outcome: Outcome) -> Response:
        retry = {"Retry-After": str(settings.ingest_retry_after_s)}
        try:
            await asyncio.wait_for(asyncio.wrap_future(outcome.written), settings.ingest_ack_timeout_s)
        except Exception as exc:
            # NOTE: a write that timed out here may still land later; its id stays in flight
            # until the producer knows, so a retry can never double it.
            raise Unavailable(
                f"the broker did not acknowledge the writes within {settings.ingest_ack_timeout_s:g}s "
                f"({type(exc).__name__}); retry later: items already written are then reported as "
                "duplicates, never stored twice",
                headers=retry,
            ) from exc
        if outcome.in_flight:
            raise Unavailable(
                f"{len(outcome.in_flight)} item(s) of this request are still being written from an "
                "earlier request; retry later",
                headers=retry,
            )
        # NOTE: written straight to JSON: FastAPI re-validating 500 accepted items against
        # IntakeResponse (still the documented schema) cost more than writing them.
        body = {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": outcome.rejected}
        return Response(to_json(body), media_type="application/json")

    @app.post("/v1/records", response_model=IntakeResponse, tags=["intake"])
    async def post_records(request: Request) -> Response:
        """One record, `{"records": [...]}`, or NDJSON (`Content-Type: application/x-ndjson`)."""
        with LATENCY.labels("records").time():
            items = await _parse_body(request, settings, "records")
            # Off the event loop: a send may block while the producer has no metadata.
            return await respond(await on_worker(intake.records, items, "http:/v1/records"))

    @app.post("/v1/labels", response_model=IntakeResponse, tags=["intake"])
    async def post_labels(request: Request) -> Response:
        """`{"labels": [{"id": "r-123", "label": 1}]}` (or NDJSON of such objects)."""
        with LATENCY.labels("labels").time():
            items = await _parse_body(request, settings, "labels")
            return await respond(await on_worker(intake.labels, items, "http:/v1/labels"))

    @app.get("/v1/schema", response_model=DatasetSchema, tags=["schema"])
    def get_schema() -> DatasetSchema:
        """The dataset schema records are validated against."""
        return schema

    return app
