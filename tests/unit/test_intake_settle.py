"""Settling a batch's writes: the de-duplication window and the outcome follow what the
producer's futures say, including a write that fails and one that answers only late."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from services.ingest.dedupe import RecentIds, Seen
from services.ingest.intake import Outcome, _Writes


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
