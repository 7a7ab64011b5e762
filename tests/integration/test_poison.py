"""A poison message on every topic a service consumes: each is dead-lettered with its reason
(by every consumer group that read it) and the consumer goes on with the next message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.events import Envelope, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from shared.validation import Label, Record
from tests.integration.conftest import read_all, read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

TOKEN = "poison-test-token-0123456789"
FEATURES = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}
NOW = datetime.now(UTC)


def poisons() -> dict[str, bytes]:
    """One of each kind of bad message, by what makes it bad."""
    envelope = json.loads(encode_event(Label(id="r-x", label=1, event_time=NOW), SOURCE)[1])
    return {
        "not JSON": b"\x00\xff{{{ not json",
        "JSON, not an event": b'{"hello": "world"}',
        "unknown event type": json.dumps({**envelope, "type": "no.such.type"}).encode(),
        "payload of the wrong shape": json.dumps({**envelope, "payload": {"id": 5}}).encode(),
        "newer schema version": json.dumps({**envelope, "schema_version": 99}).encode(),
        "oversized": b'{"junk": "' + b"x" * 900_000 + b'"}',
    }


SOURCE = Source(service="poison-test", instance="t")
# Who consumes what (consumer service, topic); the models topic is read by three of them.
CONSUMERS = {
    topics.RAW: ["ingest"],
    topics.RECORDS: ["monitor"],
    topics.PREDICTIONS: ["monitor"],
    topics.LABELS: ["monitor"],
    topics.EXAMPLES: ["trainer"],
    topics.DRIFT: ["trainer"],
    topics.MODELS: ["serving", "trainer", "monitor"],
    topics.TRAINING: ["monitor"],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("poison"), CTLOOP_REGISTRY_TOKEN=TOKEN)
    yield running
    stop_stack(running)


def test_every_consumer_dead_letters_poison_and_goes_on(stack: Stack) -> None:
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    bad = poisons()
    for topic in CONSUMERS:
        for value in bad.values():
            producer.send(topic, value, key=b"poison")
    # then valid messages behind the poison, whose effects show each consumer went on
    raw_record = {"id": "after-raw", "features": FEATURES, "label": 1}
    producer.send(topics.RAW, json.dumps(raw_record).encode(), key=b"after-raw")
    labelled = Record(id="after-records", event_time=NOW, features=FEATURES, label=0)  # type: ignore[arg-type]
    producer.send(topics.RECORDS, encode_event(labelled, SOURCE)[1], key=b"after-records")
    late = Record(id="after-labels", event_time=NOW, features=FEATURES)  # type: ignore[arg-type]
    producer.send(topics.RECORDS, encode_event(late, SOURCE)[1], key=b"after-labels")
    label = Label(id="after-labels", label=1, event_time=NOW)
    producer.send(topics.LABELS, encode_event(label, SOURCE)[1], key=b"after-labels")
    producer.flush(60)
    producer.close()

    upload_demo(stack.url("registry"), TOKEN, seed=1, rows=300)  # a valid `models` event

    # ingest validated the raw record after the poison; the monitor joined both examples
    read_topic(
        stack.bootstrap, topics.RECORDS, lambda es: any(e.payload.get("id") == "after-raw" for e in es)
    )
    examples = read_topic(
        stack.bootstrap,
        topics.EXAMPLES,
        lambda es: {"after-raw", "after-records", "after-labels"} <= {e.payload.get("record_id") for e in es},
    )
    assert examples
    # serving and the monitor followed the promotion behind the poison on `models`
    wait_for(
        lambda: httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version") == 1,
        "serving to load v1",
    )
    wait_for(
        lambda: (
            httpx.get(f"{stack.url('monitor')}/v1/drift/status", timeout=5).json()["reference_version"] == 1
        ),
        "the monitor to take v1's reference",
    )
    # the trainer read its examples behind the poison on `examples`
    wait_for(
        lambda: "ctloop_trainer_examples 3.0" in httpx.get(f"{stack.url('trainer')}/metrics", timeout=5).text,
        "the trainer to hold the three examples",
    )

    expected = {(topic, service) for topic, services in CONSUMERS.items() for service in services}

    def rejections(events: list[Envelope]) -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], int] = {}
        for e in events:
            if e.type == "input.rejected" and e.payload.get("origin") in CONSUMERS:
                key = (e.payload["origin"], e.source.service)
                seen[key] = seen.get(key, 0) + 1
        return seen

    try:
        letters = read_topic(
            stack.bootstrap,
            topics.DEADLETTER,
            lambda es: all(rejections(es).get(k, 0) >= len(bad) for k in expected),
            timeout_s=120,
        )
    except AssertionError:
        seen = read_all(stack.bootstrap, topics.DEADLETTER, lambda es: len(es) > 0)
        found: dict[str, int] = {}
        for e in seen:
            key = f"{e.payload.get('origin')} by {e.source.service}"
            found[key] = found.get(key, 0) + 1
        raise AssertionError(f"dead letters: {found}") from None
    counts = rejections(letters)
    assert all(counts.get(k, 0) >= len(bad) for k in expected), (
        counts
    )  # at least once: a replay may repeat one
    for e in letters:
        if e.type == "input.rejected" and e.payload.get("origin") in CONSUMERS:
            assert e.payload["errors"][0]["reason"], "a dead letter without a reason"
            assert e.payload["offset"] is not None
