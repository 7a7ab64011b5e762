"""Serving's HTTP API: `POST /v1/predict` (ctloop's format) and the Open Inference Protocol V2
(`/v2/...`, see services/serving/v2.py), both answered by the model being served.

Every response names the version that computed it. With no model yet (cold start) the answer
is 503 with the reason; inputs that do not fit the schema get 422 with each field's error.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Body, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.serving.batching import MicroBatcher
from services.serving.holder import ModelHolder
from services.serving.prediction_log import PredictionLog
from services.serving.scoring import Scorer
from services.serving.shadow import ShadowScorer
from services.serving.v2 import v2_router, v2_validation_error
from shared.http import Unprocessable, create_app
from shared.schema import LabelValue
from shared.settings import ServingSettings
from shared.supervision import Supervisor


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


def build_app(
    holder: ModelHolder,
    prediction_log: PredictionLog,
    shadow: ShadowScorer,
    batcher: MicroBatcher,
    settings: ServingSettings,
    supervisor: Supervisor | None = None,
) -> FastAPI:
    scorer = Scorer(holder, prediction_log, shadow, batcher, settings.serving_max_rows)

    def health() -> dict[str, object]:
        model = holder.current
        return {
            "ready": model is not None,
            "service": "serving",
            "model_version": model.number if model else None,
            "challenger_version": holder.challenger.number if holder.challenger else None,
            "reason": None if model else "no champion model loaded yet",
        }

    app = create_app(
        "ctloop serving", health=health, supervisor=supervisor, max_body_bytes=settings.serving_max_body_bytes
    )

    @app.post("/v1/predict", response_model=PredictResponse, tags=["predict"])
    async def predict(body: dict[str, Any] = Body(..., examples=[EXAMPLE])) -> JSONResponse:  # noqa: B008
        """Predict one record (`{"id", "features"}`) or a batch (`{"records": [...]}`)."""
        started = time.perf_counter()
        model = scorer.model("v1")
        items = body.get("records", [body])
        if not isinstance(items, list) or not items:
            raise Unprocessable([{"index": 0, "field": "records", "reason": "must be a non-empty list"}])
        pairs = [(i.get("id"), i.get("features")) if isinstance(i, dict) else (None, i) for i in items]
        ids, rows = await scorer.validated(model, pairs, "v1")
        scored = await scorer.score(model, ids, rows, "v1", started)
        # NOTE: built as plain JSON: every value is already validated, and re-validating the
        # response through PredictResponse cost more than the prediction (profiled).
        return JSONResponse(
            {
                "model_version": model.number,
                "predictions": [
                    {
                        "id": i,
                        "prediction": c,
                        "probabilities": p,
                        "prediction_id": pid,
                        "model_version": model.number,
                    }
                    for i, c, p, pid in zip(
                        scored.ids, scored.classes, scored.probabilities, scored.prediction_ids, strict=True
                    )
                ],
            }
        )

    app.include_router(v2_router(scorer))
    app.add_exception_handler(RequestValidationError, v2_validation_error)
    return app
