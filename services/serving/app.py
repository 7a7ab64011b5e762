"""Serving's HTTP API: `POST /v1/predict` (ctloop's format) and the Open Inference Protocol V2
(`/v2/...`, see services/serving/v2.py), both answered by the model being served (the same
scorer answers V2 over gRPC: services/serving/grpc_server.py).

Every response names the version that computed it. With no model yet (cold start) the answer
is 503 with the reason; inputs that do not fit the schema get 422 with each field's error.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.serving.scoring import Scorer
from services.serving.v2 import add_v2_routes, v2_validation_error
from shared.http import (
    BadRequest,
    CompactJSONResponse,
    DirectRoute,
    Unprocessable,
    create_app,
    direct_routes_first,
)
from shared.json_input import MalformedJSON, loads_json
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
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": EXAMPLE,
            }
        },
    }
}
"""The body of `/v1/predict`, documented by hand: the route reads it itself."""


def build_app(scorer: Scorer, settings: ServingSettings, supervisor: Supervisor | None = None) -> FastAPI:
    holder = scorer.holder

    def health() -> dict[str, object]:
        model = holder.current
        return {
            "ready": model is not None,
            "service": "serving",
            "environment": settings.serving_environment,
            "model_version": model.number if model else None,
            "challenger_version": holder.challenger.number if holder.challenger else None,
            "reason": None if model else "no champion model loaded yet",
        }

    app = create_app(
        "ctloop serving", health=health, supervisor=supervisor, max_body_bytes=settings.serving_max_body_bytes
    )

    async def predict(request: Request) -> JSONResponse:
        """Predict one record (`{"id", "features"}`) or a batch (`{"records": [...]}`)."""
        started = time.perf_counter()
        model = scorer.model("v1")
        # NOTE: parsed here rather than by FastAPI: its parser answered JSON nested too deep or
        # a 5,000-digit number with a bare "There was an error parsing the body".
        try:
            body = loads_json(await request.body())
        except MalformedJSON as exc:
            raise BadRequest(str(exc)) from exc
        if not isinstance(body, dict):
            raise Unprocessable([{"index": 0, "field": "<body>", "reason": "must be a JSON object"}])
        items = body.get("records", [body])
        if not isinstance(items, list) or not items:
            raise Unprocessable([{"index": 0, "field": "records", "reason": "must be a non-empty list"}])
        pairs = [(i.get("id"), i.get("features")) if isinstance(i, dict) else (None, i) for i in items]
        ids, rows = await scorer.validated(model, pairs, "v1")
        scored = await scorer.score(model, ids, rows, "v1", started)
        # NOTE: built as plain JSON: every value is already validated, and re-validating the
        # response through PredictResponse cost more than the prediction (profiled).
        return CompactJSONResponse(
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

    app.router.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        tags=["predict"],
        openapi_extra=PREDICT_BODY,
        route_class_override=DirectRoute,
    )
    add_v2_routes(app.router, scorer)
    direct_routes_first(app)
    app.add_exception_handler(RequestValidationError, v2_validation_error)
    return app
