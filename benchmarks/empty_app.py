"""The serving benchmark's upper limit for HTTP: a FastAPI endpoint that does no work."""

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
def predict() -> dict[str, object]:
    return ANSWER
