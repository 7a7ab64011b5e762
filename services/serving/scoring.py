"""Scoring shared by both prediction APIs (ctloop's /v1 and the Open Inference Protocol /v2):
pick the model, validate rows against its schema, predict, log the predictions, offer them to
the shadow challenger, count them. The routes only translate their wire format."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Histogram

from services.serving.batching import MicroBatcher, Result
from services.serving.holder import ModelHolder
from services.serving.model import LoadedModel
from services.serving.prediction_log import PredictionLog, ScoredRows
from services.serving.shadow import ShadowScorer
from shared.http import NotFound, TooLarge, Unavailable, Unprocessable
from shared.ids import new_id
from shared.validation import FieldError, InvalidField, Row, check_features, new_record_id

# NOTE: validating a row costs microseconds, a thread hop much more; a large batch's
# validation is moved off the event loop so it does not stall other requests.
INLINE_ROWS = 64

REQUESTS = Counter("ctloop_serving_requests_total", "Prediction requests", ["status", "version", "api"])
LATENCY = Histogram(
    "ctloop_serving_request_seconds",
    "Prediction request latency",
    ["api"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class Scorer:
    def __init__(
        self,
        holder: ModelHolder,
        prediction_log: PredictionLog,
        shadow: ShadowScorer,
        batcher: MicroBatcher,
        max_rows: int,
    ) -> None:
        self.max_rows = max_rows
        self.holder = holder
        self.prediction_log = prediction_log
        self.shadow = shadow
        self.batcher = batcher

    def model(self, api: str, version: int | None = None) -> LoadedModel:
        """The champion (read once: one version per response), or the loaded `version`."""
        model = self.holder.current
        if model is None:
            REQUESTS.labels("503", "none", api).inc()
            raise Unavailable(
                "no model is being served yet: the trainer has not produced a champion (cold start)",
                headers={"Retry-After": "5"},
            )
        if version is not None and version != model.number:
            challenger = self.holder.challenger
            if challenger is None or challenger.number != version:
                REQUESTS.labels("404", str(version), api).inc()
                raise NotFound(f"version {version} is not loaded (champion: {model.number})")
            return challenger
        return model

    def rows(
        self, model: LoadedModel, items: list[tuple[object, object]], api: str
    ) -> tuple[list[str], list[Row]]:
        """Validate (record id, features) pairs; 422 listing every invalid field."""
        ids: list[str] = []
        rows: list[Row] = []
        errors: list[FieldError] = []
        for index, (record_id, features) in enumerate(items):
            try:
                record_id = record_id or new_record_id()
                if not isinstance(record_id, str):
                    raise InvalidField("id", "must be a string", "type")
                rows.append(check_features(model.schema, features))
                ids.append(record_id)
            except InvalidField as exc:
                errors.append(FieldError(index=index, field=exc.field, reason=exc.reason, code=exc.code))
        if errors:
            REQUESTS.labels("422", str(model.number), api).inc()
            raise Unprocessable([e.model_dump(exclude_none=True) for e in errors])
        return ids, rows

    def rows_here(
        self, model: LoadedModel, items: list[tuple[object, object]], api: str
    ) -> tuple[list[str], list[Row]]:
        """`rows` within the per-request limit (413 beyond it), on the calling thread."""
        if len(items) > self.max_rows:
            REQUESTS.labels("413", str(model.number), api).inc()
            raise TooLarge(f"{len(items)} rows exceed the limit of {self.max_rows} per request")
        return self.rows(model, items, api)

    async def validated(
        self, model: LoadedModel, items: list[tuple[object, object]], api: str
    ) -> tuple[list[str], list[Row]]:
        """`rows_here`, on the event loop for a few rows and off it for large batches."""
        if len(items) <= INLINE_ROWS:
            return self.rows_here(model, items, api)
        return await run_in_threadpool(self.rows_here, model, items, api)

    async def score(
        self, model: LoadedModel, ids: list[str], rows: list[Row], api: str, started: float
    ) -> ScoredRows:
        """Predict validated rows (micro-batched with concurrent requests), log and shadow them."""
        result = await self.batcher.predict(model, rows)
        return self._scored(model, ids, rows, result, api, started)

    def score_blocking(
        self, model: LoadedModel, ids: list[str], rows: list[Row], api: str, started: float
    ) -> ScoredRows:
        """`score` from a worker thread (gRPC's), which waits for the micro-batcher itself."""
        result = self.batcher.predict_blocking(model, rows)
        return self._scored(model, ids, rows, result, api, started)

    def _scored(
        self, model: LoadedModel, ids: list[str], rows: list[Row], result: Result, api: str, started: float
    ) -> ScoredRows:
        """Predicted rows logged, offered to the shadow challenger and counted."""
        classes, probabilities = result
        scored = ScoredRows(
            model_name=model.schema.name,
            model_version=model.number,
            shadow=model is not self.holder.current,  # a challenger scored directly
            at=datetime.now(UTC),
            ids=ids,
            rows=rows,
            classes=classes,
            probabilities=probabilities,
            prediction_ids=[new_id() for _ in ids],
        )
        self.prediction_log.log(scored)
        if not scored.shadow:
            self.holder.recent.add(rows[-8:])  # a few per request: the swap check's sample
        if not scored.shadow:
            self.shadow.offer(ids, rows, classes, scored.at)
        REQUESTS.labels("200", str(model.number), api).inc()
        LATENCY.labels(api).observe(time.perf_counter() - started)
        return scored
