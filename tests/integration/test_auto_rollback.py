"""Automatic rollback through the real monitor and registry processes: a new champion whose
live accuracy is clearly below the one it replaced is rolled back, with the reason recorded."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from shared import topics
from shared.events import Prediction
from shared.kafka import EventPublisher
from shared.settings import CommonSettings
from shared.validation import Label
from tests.fixtures import demo_rows
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration


def test_worse_champion_is_rolled_back(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = start_stack(tmp_path_factory.mktemp("rollback"), services=("registry", "monitor"))
    try:
        registry = stack.url("registry")
        publisher = EventPublisher(CommonSettings(kafka_bootstrap=stack.bootstrap), "test")

        def upload(seed: int) -> int:
            return int(upload_demo(stack, seed=seed)["version"])

        def serve(version: int, accuracy: float, count: int, seed: int) -> None:
            rng, now = random.Random(seed), datetime.now(UTC)
            for i, features in enumerate(demo_rows(count, seed=seed)):
                record_id, truth = f"v{version}-{i}", rng.random() < 0.5
                predicted = truth if rng.random() < accuracy else not truth
                publisher.publish(
                    topics.PREDICTIONS,
                    Prediction(
                        prediction_id=f"p-{record_id}",
                        record_id=record_id,
                        model_name="demo",
                        model_version=version,
                        features=features,
                        prediction=int(predicted),
                        probabilities={"0": 0.5, "1": 0.5},  # type: ignore[arg-type]
                        event_time=now,
                    ),
                    key=record_id,
                )
                publisher.publish(
                    topics.LABELS,
                    Label(id=record_id, label=int(truth), event_time=now),
                    key=record_id,
                )
            publisher.flush(30)

        def monitor_reference() -> int | None:
            try:
                return httpx.get(f"{stack.url('monitor')}/v1/drift/status", headers=stack.auth()).json()[
                    "reference_version"
                ]
            except httpx.HTTPError:
                return None

        first = upload(seed=1)
        wait_for(lambda: monitor_reference() == first, "the monitor to take v1 as reference", 120)
        serve(first, accuracy=0.85, count=300, seed=2)
        wait_for(
            lambda: (
                httpx.get(f"{stack.url('monitor')}/v1/drift/status", headers=stack.auth()).json()[
                    "labelled_predictions"
                ]
                >= 200
            ),
            "the monitor to join v1's predictions with their labels",
            120,
        )
        second = upload(seed=3)
        wait_for(lambda: monitor_reference() == second, "the monitor to take v2 as reference", 120)
        serve(second, accuracy=0.5, count=260, seed=4)

        def champion() -> int:
            return int(
                httpx.get(f"{registry}/v1/models/demo/aliases/champion", headers=stack.auth()).json()[
                    "version"
                ]
            )

        wait_for(lambda: champion() == first, "the registry to roll back to v1", 120)
        history = httpx.get(f"{registry}/v1/models/demo/history", headers=stack.auth()).json()
        assert history[-1]["version"] == first and history[-1]["reason"].startswith(
            f"auto rollback: v{second}"
        )
        publisher.close()
    finally:
        stop_stack(stack)
