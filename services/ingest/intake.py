"""The intake rules both doors share (HTTP and the `raw` topic): validate, de-duplicate,
write the valid items to `records` or `labels`, dead-letter the rest with their reason.

De-duplication follows each write: an id is in flight until the broker acknowledges it
(then later copies are duplicates) or the write fails for good (then a retry goes through).
"""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from kafka.producer.future import FutureRecordMetadata
from prometheus_client import Counter, Histogram

from services.ingest.dedupe import RecentIds, Seen
from shared import topics
from shared.events import DeadLetter
from shared.kafka import EventPublisher
from shared.schema import DatasetSchema
from shared.validation import FieldError, Label, Record, validate_labels, validate_records

ACCEPTED = Counter("ctloop_ingest_accepted_total", "Items written and acknowledged", ["kind", "origin"])
REJECTED = Counter("ctloop_ingest_rejected_total", "Items refused by validation", ["kind", "code"])
DUPLICATES = Counter("ctloop_ingest_duplicates_total", "Items already accepted in the window", ["kind"])
PRODUCE_ERRORS = Counter("ctloop_ingest_producer_errors_total", "Writes the broker did not take", ["kind"])
BATCH = Histogram(
    "ctloop_ingest_batch_size", "Items per request or poll", buckets=(1, 10, 50, 100, 500, 1000, 5000)
)


@dataclass
class Outcome:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    """Items whose earlier write is still unacknowledged: the caller must retry later."""
    rejected: list[FieldError] = field(default_factory=list)
    written: Future[None] = field(default_factory=Future)
    """Done when the broker acknowledged every accepted item; failed with the first error."""


class _Acks:
    """Counts a batch's acknowledgements down on kafka-python's I/O thread: one callback per
    write updates the de-duplication window and, at the last one, completes the batch."""

    def __init__(self, intake: Intake, kind: str, origin: str, outcome: Outcome) -> None:
        self.intake, self.kind, self.origin, self.outcome = intake, kind, origin, outcome
        self.pending = 1  # held by `seal` until every write of the batch has been added
        self.written = 0
        self.lock = threading.Lock()

    def watch(self, future: FutureRecordMetadata, key: str) -> None:
        with self.lock:
            self.pending += 1
        future.add_callback(self._written, key)
        future.add_errback(self._failed, key)

    def seal(self) -> None:
        self._count_down()

    def _count_down(self, written: int = 0) -> None:
        with self.lock:
            self.pending -= 1
            self.written += written
            last = self.pending == 0
        if last:
            ACCEPTED.labels(self.kind, self.origin).inc(self.written)
            with contextlib.suppress(InvalidStateError):  # a write already failed it
                self.outcome.written.set_result(None)

    def _written(self, key: str, _metadata: object) -> None:
        self.intake.recent.confirm(key)
        self._count_down(written=1)

    def _failed(self, key: str, error: BaseException) -> None:
        self.intake.recent.forget(key)
        PRODUCE_ERRORS.labels(self.kind).inc()
        with contextlib.suppress(InvalidStateError):
            self.outcome.written.set_exception(error)


class Intake:
    def __init__(self, schema: DatasetSchema, publisher: EventPublisher, recent: RecentIds) -> None:
        self.schema = schema
        self.publisher = publisher
        self.recent = recent

    def records(
        self, items: list[Any], origin: str, positions: list[tuple[int, int]] | None = None
    ) -> Outcome:
        """Validate and write records; `positions` are the items' (partition, offset) when they
        were read from a topic, so their dead letters can say where they came from."""
        valid, errors = validate_records(self.schema, items)
        return self._take(
            "record", items, valid, errors, origin, topics.RECORDS, "record.accepted", positions
        )

    def labels(self, items: list[Any], origin: str) -> Outcome:
        valid, errors = validate_labels(self.schema, items)
        return self._take("label", items, valid, errors, origin, topics.LABELS, "label.accepted")

    def _take(
        self,
        kind: str,
        items: list[Any],
        valid: list[Record] | list[Label],
        errors: list[FieldError],
        origin: str,
        topic: str,
        event_type: str,
        positions: list[tuple[int, int]] | None = None,
    ) -> Outcome:
        BATCH.observe(len(items))
        outcome = Outcome(rejected=errors)
        for error in errors:
            REJECTED.labels(kind, error.code).inc()
            partition, offset = positions[error.index] if positions else (None, None)
            payload = DeadLetter(
                origin=origin,
                errors=[error],
                original=json.dumps(items[error.index], default=str),
                partition=partition,
                offset=offset,
            )
            self.publisher.publish(topics.DEADLETTER, "input.rejected", payload, key=origin)
        bad = {e.index for e in errors}
        indices = [i for i in range(len(items)) if i not in bad]
        acks = _Acks(self, kind, origin, outcome)
        in_this_batch: set[str] = set()
        for index, item in zip(indices, valid, strict=True):
            key = f"{kind}:{item.id}"
            seen = Seen.DUPLICATE if key in in_this_batch else self.recent.reserve(key)
            in_this_batch.add(key)
            if seen is Seen.DUPLICATE:
                DUPLICATES.labels(kind).inc()
                outcome.duplicates.append({"index": index, "id": item.id})
                continue
            if seen is Seen.IN_FLIGHT:
                outcome.in_flight.append({"index": index, "id": item.id})
                continue
            _, future = self.publisher.publish(topic, event_type, item, key=item.id)
            acks.watch(future, key)
            outcome.accepted.append({"index": index, "id": item.id})
        acks.seal()
        return outcome
