"""The intake rules both doors share (HTTP and the `raw` topic): validate, de-duplicate,
write the valid items to `records` or `labels`, dead-letter the rest with their reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kafka.producer.future import FutureRecordMetadata
from prometheus_client import Counter, Histogram

from services.ingest.dedupe import RecentIds
from shared import topics
from shared.events import DeadLetter
from shared.kafka import EventPublisher
from shared.schema import DatasetSchema
from shared.validation import FieldError, Label, Record, validate_labels, validate_records

ACCEPTED = Counter("ctloop_ingest_accepted_total", "Items accepted", ["kind", "origin"])
REJECTED = Counter("ctloop_ingest_rejected_total", "Items rejected", ["kind", "field"])
DUPLICATES = Counter("ctloop_ingest_duplicates_total", "Items already accepted in the window", ["kind"])
BATCH = Histogram(
    "ctloop_ingest_batch_size", "Items per request or poll", buckets=(1, 10, 50, 100, 500, 1000, 5000)
)


@dataclass
class Outcome:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[FieldError] = field(default_factory=list)
    futures: list[FutureRecordMetadata] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


class Intake:
    def __init__(self, schema: DatasetSchema, publisher: EventPublisher, recent: RecentIds) -> None:
        self.schema = schema
        self.publisher = publisher
        self.recent = recent

    def _dead_letter(self, origin: str, error: FieldError, original: Any) -> None:
        payload = DeadLetter(origin=origin, errors=[error], original=json.dumps(original, default=str))
        self.publisher.publish(topics.DEADLETTER, "input.rejected", payload, key=origin)

    def records(self, items: list[Any], origin: str) -> Outcome:
        valid, errors = validate_records(self.schema, items)
        return self._take("record", items, valid, errors, origin, topics.RECORDS, "record.accepted")

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
    ) -> Outcome:
        BATCH.observe(len(items))
        outcome = Outcome(rejected=errors)
        for error in errors:
            REJECTED.labels(kind, error.field).inc()
            self._dead_letter(origin, error, items[error.index])
        bad = {e.index for e in errors}
        indices = [i for i in range(len(items)) if i not in bad]
        for index, item in zip(indices, valid, strict=True):
            key = f"{kind}:{item.id}"
            if self.recent.check_and_add(key):
                DUPLICATES.labels(kind).inc()
                outcome.duplicates.append({"index": index, "id": item.id})
                continue
            _, future = self.publisher.publish(topic, event_type, item, key=item.id)
            outcome.futures.append(future)
            outcome.keys.append(key)
            outcome.accepted.append({"index": index, "id": item.id})
        ACCEPTED.labels(kind, origin).inc(len(outcome.accepted))
        return outcome

    def forget(self, outcome: Outcome) -> None:
        """The broker did not take these writes: let a retry through."""
        for key in outcome.keys:
            self.recent.forget(key)
