"""Ingest's HTTP API: `POST /v1/records`, `POST /v1/labels`, `GET /v1/schema`.

A batch is not all-or-nothing: the response lists what was accepted, what was a duplicate
of a recent id, and each rejected item with its index, field and reason. An item is reported
accepted only once the broker acknowledged it (acks=all); if the broker cannot take writes
the answer is 503 with Retry-After and nothing is reported accepted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import Histogram
from pydantic import BaseModel
from pydantic_core import from_json, to_json

from services.ingest.intake import Intake, Outcome
from shared.http import BadRequest, TooLarge, Unavailable, create_app
from shared.schema import DatasetSchema
from shared.settings import IngestSettings
from shared.supervision import Supervisor
from shared.validation import FieldError

LATENCY = Histogram("ctloop_ingest_request_seconds", "Ingest request latency", ["route"])


class IntakeResponse(BaseModel):
    accepted: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    rejected: list[FieldError]


def _loads(data: bytes) -> Any:
    """JSON to Python. pydantic-core's parser is ~1.6x faster than `json`; `json` still reads
    what pydantic-core refuses, so it decides what is malformed and says where (its error has
    the line and column)."""
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data)


async def _parse_body(request: Request, settings: IngestSettings, key: str) -> list[Any]:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.ingest_max_body_bytes:
        raise TooLarge(f"body of {length} bytes exceeds the limit of {settings.ingest_max_body_bytes}")
    body = await request.body()
    if len(body) > settings.ingest_max_body_bytes:
        raise TooLarge(f"body exceeds the limit of {settings.ingest_max_body_bytes} bytes")
    if "ndjson" in request.headers.get("content-type", ""):
        items = []
        for number, line in enumerate(body.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(_loads(line))
                except json.JSONDecodeError as exc:
                    raise BadRequest(
                        f"malformed JSON on line {number}, column {exc.colno}: {exc.msg}"
                    ) from exc
                except UnicodeDecodeError as exc:
                    raise BadRequest(f"line {number} is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    else:
        try:
            data = _loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
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
) -> FastAPI:
    app = create_app(
        "ctloop ingest", health=lambda: {"ready": ready(), "service": "ingest"}, supervisor=supervisor
    )
    # NOTE: one thread validates and sends for every request. With a thread per request, the
    # threads fought kafka-python's per-partition locks and the GIL (35% of samples at 4
    # concurrent requests) and the service ran 5x slower; validation gains nothing from threads.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")

    async def on_worker(
        function: Callable[[list[Any], str], Outcome], items: list[Any], origin: str
    ) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(worker, function, items, origin)

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
