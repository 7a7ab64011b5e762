"""Serving's HTTP API: `POST /v1/predict` answered by the model being served.

Every response names the version that computed it. With no model yet (cold start) the answer
is 503 with the reason; inputs that do not fit the schema get 422 with each field's error.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Body, FastAPI
from prometheus_client import Counter, Histogram
from pydantic import BaseModel

from services.serving.holder import ModelHolder
from services.serving.prediction_log import PredictionLog
from services.serving.shadow import ShadowScorer
from shared.events import Prediction
from shared.http import Unavailable, Unprocessable, create_app
from shared.ids import new_id
from shared.schema import LabelValue
from shared.validation import FieldError, InvalidField, check_features, new_record_id

REQUESTS = Counter("ctloop_serving_requests_total", "Prediction requests", ["status", "version"])
LATENCY = Histogram(
    "ctloop_serving_request_seconds",
    "Prediction request latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class PredictionOut(BaseModel):
    id: str
    prediction: LabelValue
    probabilities: dict[str, float]
    prediction_id: str
    model_version: int


class PredictResponse(BaseModel):
    model_version: int
    predictions: list[PredictionOut]


EXAMPLE = {
    "records": [{"id": "r-9", "features": {"x1": 0.3, "x2": -1.2, "x3": 0.1, "amount": 12.5, "color": "red"}}]
}


def build_app(holder: ModelHolder, prediction_log: PredictionLog, shadow: ShadowScorer) -> FastAPI:
    def health() -> dict[str, object]:
        model = holder.current
        return {
            "ready": model is not None,
            "service": "serving",
            "model_version": model.number if model else None,
            "challenger_version": holder.challenger.number if holder.challenger else None,
            "reason": None if model else "no champion model loaded yet",
        }

    app = create_app("ctloop serving", health=health)

    @app.post("/v1/predict", response_model=PredictResponse, tags=["predict"])
    def predict(body: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> PredictResponse:  # noqa: B008
        """Predict one record (`{"id", "features"}`) or a batch (`{"records": [...]}`)."""
        start = time.perf_counter()
        model = holder.current  # NOTE: read the pointer once: one version per response
        if model is None:
            REQUESTS.labels("503", "none").inc()
            raise Unavailable(
                "no model is being served yet: the trainer has not produced a champion (cold start)",
                headers={"Retry-After": "5"},
            )
        items = body.get("records", [body])
        if not isinstance(items, list) or not items:
            raise Unprocessable([{"index": 0, "field": "records", "reason": "must be a non-empty list"}])
        ids: list[str] = []
        rows: list[dict[str, object]] = []
        errors: list[FieldError] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidField("<record>", "must be a JSON object")
                record_id = item.get("id") or new_record_id()
                if not isinstance(record_id, str):
                    raise InvalidField("id", "must be a string")
                rows.append(check_features(model.schema, item.get("features")))
                ids.append(record_id)
            except InvalidField as exc:
                errors.append(FieldError(index=index, field=exc.field, reason=exc.reason, code=exc.code))
        if errors:
            REQUESTS.labels("422", str(model.number)).inc()
            raise Unprocessable([e.model_dump(exclude_none=True) for e in errors])
        classes, probabilities = model.predict(rows)
        now = datetime.now(UTC)
        out = [
            PredictionOut(
                id=i,
                prediction=c,
                probabilities=p,
                prediction_id=new_id(),
                model_version=model.number,
            )
            for i, c, p in zip(ids, classes, probabilities, strict=True)
        ]
        prediction_log.log(
            [
                Prediction(
                    prediction_id=o.prediction_id,
                    record_id=o.id,
                    model_name=model.schema.name,
                    model_version=model.number,
                    features=row,
                    prediction=o.prediction,
                    probabilities=o.probabilities,
                    event_time=now,
                )
                for o, row in zip(out, rows, strict=True)
            ]
        )
        shadow.offer(ids, rows, classes, now)
        REQUESTS.labels("200", str(model.number)).inc()
        LATENCY.observe(time.perf_counter() - start)
        return PredictResponse(model_version=model.number, predictions=out)

    return app
