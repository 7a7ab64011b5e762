"""The intake rules both doors share (HTTP and the `raw` topic): validate, de-duplicate,
write the valid items to `records` or `labels`, dead-letter the rest with their reason.

De-duplication follows each write: an id is in flight until the broker acknowledges it
(then later copies are duplicates) or the write fails for good (then a retry goes through).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import MessageSizeTooLargeError
from kafka.producer.future import FutureRecordMetadata
from prometheus_client import Counter, Histogram

from services.ingest.dedupe import RecentIds, Seen
from shared import topics
from shared.events import DeadLetter
from shared.kafka import EventPublisher, TryLater
from shared.schema import DatasetSchema
from shared.validation import (
    FieldError,
    Label,
    LabelFields,
    Record,
    RecordFields,
    validate_labels,
    validate_records,
)

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


# Longer than any write can stay unresolved: kafka-python fails a batch after its delivery
# timeout (120 s by default); a write still open after this is settled by a callback instead.
SETTLE_WAIT_S = 180.0


class _Writes:
    """A batch's writes and who waits for them. A settler thread waits for the broker's answer
    to each write in order; kafka-python completes a whole produce batch at once, so one wait
    covers many records. This replaced two callbacks per record on the producer's I/O thread,
    which cost as much as validating the record (in-process intake: 14k -> ~20k records/s)."""

    def __init__(self, recent: RecentIds, kind: str, origin: str, outcome: Outcome) -> None:
        self.recent, self.kind, self.origin, self.outcome = recent, kind, origin, outcome
        self.pending: list[tuple[str, FutureRecordMetadata]] = []

    def settle(self, wait_s: float = SETTLE_WAIT_S) -> None:
        """Wait for every write, then settle the window and the outcome in one step each."""
        written: list[str] = []
        failed: list[str] = []
        error: BaseException | None = None
        deadline = time.monotonic() + wait_s
        for key, future in self.pending:
            if not future.is_done:
                with contextlib.suppress(Exception):  # its outcome is read below
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
            if not future.is_done:  # never seen here; kept in flight until the producer knows
                future.add_both(self._late, key)
                error = error or TimeoutError(f"no answer from the producer in {wait_s:g}s")
            elif future.exception is None:
                written.append(key)
            else:
                failed.append(key)
                error = error or future.exception
        self.recent.settle(written, failed)
        ACCEPTED.labels(self.kind, self.origin).inc(len(written))
        if failed:
            PRODUCE_ERRORS.labels(self.kind).inc(len(failed))
        if error is None:
            self.outcome.written.set_result(None)
        else:
            self.outcome.written.set_exception(error)

    def _late(self, key: str, result: object) -> None:
        if isinstance(result, BaseException):
            self.recent.settle(failed=[key])
            PRODUCE_ERRORS.labels(self.kind).inc()
        else:
            self.recent.settle(written=[key])
            ACCEPTED.labels(self.kind, self.origin).inc()


class Busy(TryLater):
    """Too many batches wait for the broker's answer: refused until some are settled."""


class Intake:
    def __init__(
        self, schema: DatasetSchema, publisher: EventPublisher, recent: RecentIds, max_unsettled: int = 10_000
    ) -> None:
        self.schema = schema
        self.publisher = publisher
        self.recent = recent
        self.max_unsettled = max_unsettled
        self._unsettled = 0
        self._unsettled_lock = threading.Lock()
        # NOTE: several settlers, so that one batch waiting on a slow partition does not hold
        # back the answers of the batches behind it.
        self._settlers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ingest-settle")

    def records(
        self, items: list[Any], origin: str, positions: list[tuple[int, int]] | None = None
    ) -> Outcome:
        """Validate and write records; `positions` are the items' (partition, offset) when they
        were read from a topic, so their dead letters can say where they came from."""
        valid, errors = validate_records(self.schema, items)
        return self._take("record", Record, items, valid, errors, origin, topics.RECORDS, positions)

    def labels(self, items: list[Any], origin: str) -> Outcome:
        valid, errors = validate_labels(self.schema, items)
        return self._take("label", Label, items, valid, errors, origin, topics.LABELS)

    def _take(
        self,
        kind: str,
        payload_type: type[Record | Label],
        items: list[Any],
        valid: Sequence[RecordFields | LabelFields],
        errors: list[FieldError],
        origin: str,
        topic: str,
        positions: list[tuple[int, int]] | None = None,
    ) -> Outcome:
        if self._unsettled >= self.max_unsettled:
            # NOTE: while the broker does not answer, each batch waits in the settle queue for
            # up to SETTLE_WAIT_S; this bound keeps a flood of requests from growing it without end.
            raise Busy(f"{self._unsettled} batches wait for the broker's answer; retry later")
        BATCH.observe(len(items))
        outcome = Outcome(rejected=errors)
        for error in errors:
            REJECTED.labels(kind, error.code).inc()
            self._dead_letter(origin, error, items[error.index], positions)
        bad = {e.index for e in errors}
        indices = [i for i in range(len(items)) if i not in bad]
        writes = _Writes(self.recent, kind, origin, outcome)
        keys = [f"{kind}:{item['id']}" for item in valid]
        seen = self.recent.reserve_all(keys)
        try:
            for index, item, key, answer in zip(indices, valid, keys, seen, strict=True):
                if answer is Seen.DUPLICATE:
                    DUPLICATES.labels(kind).inc()
                    outcome.duplicates.append({"index": index, "id": item["id"]})
                elif answer is Seen.IN_FLIGHT:
                    outcome.in_flight.append({"index": index, "id": item["id"]})
                else:
                    try:
                        _, future = self.publisher.publish_validated(
                            topic, payload_type, item, key=item["id"]
                        )
                    except MessageSizeTooLargeError as exc:
                        # The item's own fault: refused like an invalid field, its id freed.
                        self.recent.settle(failed=[key])
                        error = FieldError(
                            index=index, field=f"<{kind}>", reason=str(exc), code="too_large", id=item["id"]
                        )
                        REJECTED.labels(kind, error.code).inc()
                        outcome.rejected.append(error)
                        self._dead_letter(origin, error, items[index], positions)
                        continue
                    writes.pending.append((key, future))
                    outcome.accepted.append({"index": index, "id": item["id"]})
        except Exception:
            # A send that failed before it was queued (no metadata in time, the producer
            # closed): the ids not queued are freed at once, so a retry is not told "in flight"
            # for the whole de-duplication window.
            queued = {key for key, _ in writes.pending}
            self.recent.settle(
                failed=[k for k, a in zip(keys, seen, strict=True) if a is Seen.NEW and k not in queued]
            )
            self._settle(writes)
            raise
        self._settle(writes)
        return outcome

    def _settle(self, writes: _Writes) -> None:
        with self._unsettled_lock:
            self._unsettled += 1
        self._settlers.submit(self._settled, writes)

    def _settled(self, writes: _Writes) -> None:
        try:
            writes.settle()
        finally:
            with self._unsettled_lock:
                self._unsettled -= 1

    def _dead_letter(
        self,
        origin: str,
        error: FieldError,
        item: Any,
        positions: list[tuple[int, int]] | None,
    ) -> None:
        partition, offset = positions[error.index] if positions else (None, None)
        self.publisher.send_dead_letter(
            DeadLetter.of(origin, [error], _as_text(item), partition=partition, offset=offset)
        )


def _as_text(item: Any) -> str:
    """An item as JSON for its dead letter (or a line saying why it cannot be written so)."""
    try:
        return json.dumps(item, default=str)
    except (ValueError, RecursionError) as exc:
        return f"<a {type(item).__name__} that cannot be written as JSON: {exc}>"
