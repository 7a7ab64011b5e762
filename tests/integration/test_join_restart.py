"""The monitor's join survives a SIGKILL: halves of joins that were waiting when the monitor
died (a record, a label that came first, a champion's prediction) are joined with partners that
arrive after the restart, and a join completed before the kill is not completed again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from services.supervisor import Stack
from shared import topics
from shared.events import Prediction, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from shared.validation import Label, Record
from tests.integration.conftest import read_all, restart, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

FEATURES = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}
NOW = datetime.now(UTC)
SOURCE = Source(service="join-test", instance="t")
GROUP = "ctloop-monitor"  # the monitor's faust app id is its consumer group


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(tmp_path, services=("registry", "monitor"))
    yield running
    stop_stack(running)


def committed_past(bootstrap: str, sent: dict[TopicPartition, int]) -> bool:
    """Has the monitor's group committed beyond each of these offsets?"""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        return all((consumer.committed(tp) or 0) > offset for tp, offset in sent.items())
    finally:
        consumer.close()


def test_waiting_halves_of_joins_survive_a_monitor_sigkill(stack: Stack) -> None:
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    sent: dict[TopicPartition, int] = {}

    def send(topic: str, kind: str, payload: Record | Label | Prediction, key: str) -> None:
        meta = producer.send(topic, encode_event(payload, SOURCE)[1], key=key.encode()).get(30)
        tp = TopicPartition(topic, meta.partition)
        sent[tp] = max(sent.get(tp, -1), meta.offset)

    def record(key: str, label: int | None = None) -> Record:
        return Record(id=key, event_time=NOW, features=FEATURES, label=label)  # type: ignore[arg-type]

    def label(key: str, value: int) -> Label:
        return Label(id=key, label=value, event_time=NOW)

    prediction = Prediction(
        prediction_id="p-1",
        record_id="j-prediction",
        model_name="demo",
        model_version=7,
        features=FEATURES,  # type: ignore[arg-type]
        prediction=1,
        probabilities={"0": 0.2, "1": 0.8},
        event_time=NOW,
    )
    # before the kill: three halves that wait, and one join that completes
    send(topics.RECORDS, "record.accepted", record("j-record"), "j-record")
    send(topics.LABELS, "label.accepted", label("j-label-first", 0), "j-label-first")
    send(topics.PREDICTIONS, "prediction.made", prediction, "j-prediction")
    send(topics.RECORDS, "record.accepted", record("j-done"), "j-done")
    send(topics.LABELS, "label.accepted", label("j-done", 1), "j-done")
    # the monitor has processed and committed all of it: only its join state remembers them
    wait_for(lambda: committed_past(stack.bootstrap, sent), "the monitor to commit what it read", 120)

    restart(stack, "monitor")

    send(topics.LABELS, "label.accepted", label("j-record", 1), "j-record")
    send(topics.RECORDS, "record.accepted", record("j-label-first"), "j-label-first")
    send(topics.LABELS, "label.accepted", label("j-prediction", 0), "j-prediction")
    send(topics.LABELS, "label.accepted", label("j-done", 1), "j-done")  # a duplicate label
    producer.flush(30)

    wanted = {"j-record", "j-label-first", "j-prediction", "j-done"}
    examples = read_all(
        stack.bootstrap,
        topics.EXAMPLES,
        lambda events: {e.payload["record_id"] for e in events} >= wanted,
        quiet_s=5.0,
        timeout_s=180,
    )
    by_id: dict[str, list[dict]] = {}
    for event in examples:
        by_id.setdefault(event.payload["record_id"], []).append(event.payload)
    assert sorted(by_id) == sorted(wanted)
    assert len(by_id["j-done"]) == 1, "a join completed before the kill was completed again"
    assert by_id["j-record"][0]["label"] == 1
    assert by_id["j-label-first"][0]["label"] == 0
    joined = by_id["j-prediction"][0]
    assert (joined["label"], joined["prediction"], joined["model_version"]) == (0, 1, 7)
