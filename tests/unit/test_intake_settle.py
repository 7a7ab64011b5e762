"""Settling a batch's writes: the de-duplication window and the outcome follow what the
producer's futures say, including a write that fails, one that answers only late, and a send
that fails before anything was queued."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from services.ingest.dedupe import RecentIds, Seen
from services.ingest.intake import Busy, Intake, Outcome, _Writes
from shared.schema import DatasetSchema


def _writes(recent: RecentIds, keys: list[str]) -> tuple[_Writes, list[FutureProduceResult]]:
    """Writes as kafka-python makes them: one produce batch per key here, completed by hand."""
    recent.reserve_all(keys)
    writes = _Writes(recent, "record", "test", Outcome())
    batches = [FutureProduceResult(TopicPartition("t", 0)) for _ in keys]
    writes.pending = [
        (key, FutureRecordMetadata(batch, 0, 0, None, 1, 1, -1))
        for key, batch in zip(keys, batches, strict=True)
    ]
    return writes, batches


def test_all_written_makes_later_copies_duplicates() -> None:
    recent = RecentIds(window_s=60, capacity=100)
    writes, futures = _writes(recent, ["a", "b"])
    # The broker answers while the settler waits (as kafka-python's I/O thread would).
    threading.Timer(0.05, lambda: [f.success((0, -1, None)) for f in futures]).start()
    writes.settle(wait_s=10)
    assert writes.outcome.written.result(timeout=1) is None
    assert recent.reserve_all(["a", "b"]) == [Seen.DUPLICATE, Seen.DUPLICATE]


def test_a_failed_write_fails_the_outcome_and_lets_its_retry_through() -> None:
    recent = RecentIds(window_s=60, capacity=100)
    writes, futures = _writes(recent, ["a", "b"])
    futures[0].success((0, -1, None))
    futures[1].failure(KafkaTimeoutError("batch expired"))
    writes.settle(wait_s=10)
    with pytest.raises(KafkaTimeoutError, match="batch expired"):
        writes.outcome.written.result(timeout=1)
    assert recent.reserve_all(["a", "b"]) == [Seen.DUPLICATE, Seen.NEW]


def test_a_write_unanswered_in_time_stays_in_flight_until_the_producer_knows() -> None:
    recent = RecentIds(window_s=60, capacity=100)
    writes, futures = _writes(recent, ["a"])
    writes.settle(wait_s=0.05)
    with pytest.raises(TimeoutError, match="no answer from the producer"):
        writes.outcome.written.result(timeout=1)
    assert recent.reserve_all(["a"]) == [Seen.IN_FLIGHT]  # it may still land: no second copy
    futures[0].success((0, -1, None))
    assert recent.reserve_all(["a"]) == [Seen.DUPLICATE]


class _RefusingPublisher:
    """A publisher whose `publish_validated` raises for the records `refuse` names, before anything is
    queued (as kafka-python's `send` does for a message over `max_request_size`, or when the
    topic's metadata does not come within `max_block_ms`)."""

    def __init__(self, refuse: dict[str, Exception]) -> None:
        self.refuse = refuse
        self.letters: list[object] = []
        self.sent: list[FutureProduceResult] = []

    def publish_validated(
        self, topic: str, payload_type: type, fields: Any, key: str
    ) -> tuple[str, FutureRecordMetadata]:
        if key in self.refuse:
            raise self.refuse[key]
        batch = FutureProduceResult(TopicPartition(topic, 0))
        self.sent.append(batch)
        return key, FutureRecordMetadata(batch, 0, 0, None, 1, 1, -1)

    def answer_all(self) -> None:
        """The broker acknowledges every write sent so far."""
        for batch in self.sent:
            if not batch.is_done:
                batch.success((0, -1, None))

    def send_dead_letter(self, letter: object) -> None:
        self.letters.append(letter)


def _records(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "features": {"a": 1.0}} for i in ids]


SCHEMA = DatasetSchema.model_validate(
    {"name": "t", "label": {"classes": [0, 1]}, "features": [{"name": "a", "type": "numeric"}]}
)


def test_a_send_that_fails_at_once_frees_the_ids_it_did_not_queue() -> None:
    recent = RecentIds(window_s=3600, capacity=100)
    publisher = _RefusingPublisher({"r-2": KafkaTimeoutError("no metadata for records after 5.0s")})
    intake = Intake(SCHEMA, publisher, recent)  # type: ignore[arg-type]
    with pytest.raises(KafkaTimeoutError):
        intake.records(_records("r-1", "r-2", "r-3"), "test")
    # r-1 was queued (its write decides); r-2 and r-3 never were: a retry goes through at once
    assert recent.reserve_all(["record:r-2", "record:r-3"]) == [Seen.NEW, Seen.NEW]
    assert recent.reserve_all(["record:r-1"]) == [Seen.IN_FLIGHT]
    publisher.answer_all()


def test_a_record_too_large_to_send_is_rejected_alone_and_its_id_freed() -> None:
    recent = RecentIds(window_s=3600, capacity=100)
    publisher = _RefusingPublisher({"r-2": MessageSizeTooLargeError("1,200,000 bytes > max_request_size")})
    outcome = Intake(SCHEMA, publisher, recent).records(_records("r-1", "r-2", "r-3"), "test")  # type: ignore[arg-type]
    assert [a["id"] for a in outcome.accepted] == ["r-1", "r-3"]
    assert [(e.id, e.code) for e in outcome.rejected] == [("r-2", "too_large")]
    assert len(publisher.letters) == 1
    assert recent.reserve_all(["record:r-2"]) == [Seen.NEW]
    publisher.answer_all()


def test_batches_waiting_for_the_broker_are_bounded() -> None:
    publisher = _RefusingPublisher({})
    intake = Intake(SCHEMA, publisher, RecentIds(window_s=3600, capacity=100), max_unsettled=1)  # type: ignore[arg-type]
    first = intake.records(_records("r-1"), "test")  # its write is not answered yet
    with pytest.raises(Busy, match="1 batches wait for the broker"):
        intake.records(_records("r-2"), "test")
    publisher.answer_all()
    first.written.result(timeout=10)
    intake.records(_records("r-2"), "test")  # room again
    publisher.answer_all()
