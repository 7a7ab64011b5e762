"""The shadow policy end to end: a new candidate becomes the challenger, serving scores
requests with it off the request path, and once enough labelled records show it at least as
good as the champion, the monitor has the registry promote it and serving swaps to it."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from shared import topics
from shared.kafka import EventPublisher
from shared.settings import CommonSettings
from shared.validation import Label
from tests.fixtures import demo_rows
from tests.integration.conftest import read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration


def test_challenger_is_shadowed_then_promoted(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = start_stack(
        tmp_path_factory.mktemp("shadow"),
        services=("registry", "monitor", "serving"),
        CTLOOP_REGISTRY_PROMOTION_POLICY="shadow",
        CTLOOP_MONITOR_SHADOW_MIN_LABELS="100",
    )
    try:
        registry, serving, monitor = stack.url("registry"), stack.url("serving"), stack.url("monitor")

        def upload(seed: int) -> dict:
            return upload_demo(stack, seed=seed, rows=400)

        first = upload(seed=1)
        assert first["aliases"] == ["champion", "staging"]  # cold start: nothing to shadow against
        second = upload(seed=2)
        assert second["aliases"] == ["challenger", "staging"]

        def health(key: str) -> object:
            try:
                return httpx.get(f"{serving}/healthz").json().get(key)
            except httpx.HTTPError:
                return None

        wait_for(
            lambda: (
                health("model_version") == first["version"]
                and health("challenger_version") == second["version"]
            ),
            "serving to load champion and challenger",
            120,
        )
        wait_for(
            lambda: (
                httpx.get(f"{monitor}/v1/drift/status", headers=stack.auth()).json()["challenger_version"]
                == second["version"]
            ),
            "the monitor to follow the challenger",
            120,
        )

        publisher = EventPublisher(CommonSettings(kafka_bootstrap=stack.bootstrap), "test")
        rows = demo_rows(200, seed=3)
        for start in range(0, len(rows), 20):
            batch = [{"id": f"s-{i}", "features": rows[i]} for i in range(start, start + 20)]
            answer = httpx.post(f"{serving}/v1/predict", json={"records": batch}, timeout=30)
            assert answer.status_code == 200 and answer.json()["model_version"] == first["version"]
        shadowed = read_topic(
            stack.bootstrap, topics.PREDICTIONS, lambda ev: sum(e.payload["shadow"] for e in ev) >= 200
        )
        assert {e.payload["model_version"] for e in shadowed if e.payload["shadow"]} == {second["version"]}
        now = datetime.now(UTC)
        for i, row in enumerate(rows):  # the rule both models learned: x1 > 0
            publisher.publish(
                topics.LABELS,
                Label(id=f"s-{i}", label=int(float(row["x1"]) > 0), event_time=now),
                key=f"s-{i}",
            )  # type: ignore[arg-type]
        publisher.flush(30)
        publisher.close()

        def champion() -> int:
            return int(
                httpx.get(f"{registry}/v1/models/demo/aliases/champion", headers=stack.auth()).json()[
                    "version"
                ]
            )

        wait_for(lambda: champion() == second["version"], "the registry to promote the challenger", 120)
        reason = httpx.get(f"{registry}/v1/models/demo/history", headers=stack.auth()).json()[-1]["reason"]
        assert reason.startswith(f"shadow: v{second['version']}")
        wait_for(
            lambda: health("model_version") == second["version"] and health("challenger_version") is None,
            "serving to swap to the promoted challenger",
            120,
        )
    finally:
        stop_stack(stack)
