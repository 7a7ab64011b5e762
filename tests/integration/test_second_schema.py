"""The whole stack on a dataset it was not written for (examples/schemas/credit.yaml): string
classes, an optional feature, an accepted-unseen category, its own id pattern."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures import CREDIT_SCHEMA, credit_examples
from tests.integration.conftest import start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration


def test_cold_start_and_predictions_on_the_credit_schema(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = start_stack(
        tmp_path_factory.mktemp("credit"), CTLOOP_SCHEMA=str(CREDIT_SCHEMA), CTLOOP_TRAINER_MIN_EXAMPLES="400"
    )
    try:
        examples = credit_examples(600, seed=4)
        records = [{"id": e.record_id, "features": e.features, "label": e.label} for e in examples]
        for start in range(0, len(records), 200):
            response = httpx.post(
                f"{stack.url('ingest')}/v1/records",
                json={"records": records[start : start + 200]},
                headers=stack.auth("producer"),
            )
            assert response.status_code == 200 and not response.json()["rejected"], response.text
        schema = httpx.get(f"{stack.url('ingest')}/v1/schema").json()
        assert schema["name"] == "credit"

        wait_for(
            lambda: httpx.get(f"{stack.url('serving')}/healthz").status_code == 200,
            "the first credit model",
            timeout_s=180,
        )
        features = {"age": 40, "debt_ratio": 2.5, "housing": "houseboat", "purpose": "car"}  # income missing
        answer = httpx.post(f"{stack.url('serving')}/v1/predict", json={"id": "app-99", "features": features})
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction["prediction"] in ("no", "yes")
        assert set(prediction["probabilities"]) == {"no", "yes"}

        version = httpx.get(
            f"{stack.url('registry')}/v1/models/credit/aliases/champion", headers=stack.auth()
        ).json()
        assert version["input_schema"]["name"] == "credit" and version["lineage"]["trigger"] == "cold_start"
        assert version["metrics"]["accuracy"] > 0.8
    finally:
        stop_stack(stack)
