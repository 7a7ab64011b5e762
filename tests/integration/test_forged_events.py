"""A `models` event is a hint, the registry is the truth: anyone who can write to the topic
can claim that a rolled-back version is champion again, and serving and the monitor must not
follow. They ask the registry's alias and act on its answer."""

from __future__ import annotations

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.events import ModelPromoted, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from tests.integration.conftest import read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration


def served(stack: Stack) -> object:
    try:
        return httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version")
    except httpx.HTTPError:
        return None


def reference(stack: Stack) -> object:
    return (
        httpx.get(f"{stack.url('monitor')}/v1/drift/status", timeout=5, headers=stack.auth())
        .json()
        .get("reference_version")
    )


def test_a_forged_promotion_changes_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = start_stack(tmp_path_factory.mktemp("forged"), ("registry", "serving", "monitor"))
    try:
        registry, auth = stack.url("registry"), {"Authorization": f"Bearer {stack.token('operator')}"}
        upload_demo(stack, seed=1)
        second = upload_demo(stack, seed=2)
        wait_for(lambda: served(stack) == 2 and reference(stack) == 2, "serving and the monitor on v2", 120)
        rolled = httpx.post(f"{registry}/v1/models/demo/rollback", json={"replaces": 2}, headers=auth)
        assert rolled.json()["version"] == 1
        wait_for(
            lambda: served(stack) == 1 and reference(stack) == 1, "serving and the monitor back on v1", 120
        )

        # A forged event: v2 (rolled back) "promoted" to champion, as its digest says.
        forged = ModelPromoted(
            model_name="demo", version=2, alias="champion", previous_version=1, digest=second["digest"]
        )
        producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
        producer.send(
            topics.MODELS, encode_event(forged, Source(service="attacker", instance="x"))[1], b"demo"
        )
        producer.flush(30)
        producer.close()
        # A real change after it: once serving answers with v3, it has handled the forged event
        # (one partition per model: in order).
        upload_demo(stack, seed=3)
        wait_for(lambda: served(stack) == 3 and reference(stack) == 3, "serving and the monitor on v3", 120)

        swaps = read_topic(
            stack.bootstrap,
            topics.MODELS,
            lambda es: any(e.payload.get("version") == 3 and e.type == "model.swapped" for e in es),
        )
        versions = [e.payload["version"] for e in swaps if e.type == "model.swapped"]
        assert versions[-2:] == [1, 3] and versions.count(2) == 1, versions  # never back to v2
        log = stack.log_path.read_text()  # type: ignore[attr-defined]
        assert log.count("reference: champion v2") == 1  # the real promotion only
    finally:
        stop_stack(stack)
