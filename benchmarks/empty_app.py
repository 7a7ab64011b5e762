"""The serving benchmark's upper limit for HTTP: a FastAPI endpoint that does no work.

NOTE: `async def`, as ctloop's routes are: a plain `def` endpoint runs on FastAPI's thread pool
and was measured slower than ctloop's `/v1` itself (4,525 vs 5,167 requests/s, one core), so it
was no limit."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()
ANSWER = {
    "model_version": 1,
    "predictions": [
        {
            "id": "r",
            "prediction": 1,
            "probabilities": {"0": 0.2, "1": 0.8},
            "prediction_id": "p",
            "model_version": 1,
        }
    ],
}


@app.post("/v1/predict")
async def predict() -> dict[str, object]:
    return ANSWER
