"""The Kafka door of ingest: bare records from external producers on `raw`, with the same
validation and outcomes as HTTP. Offsets are committed only after the broker acknowledged
the batch's writes."""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

from services.ingest.intake import Intake
from shared import topics
from shared.json_input import MalformedJSON, loads_json
from shared.kafka import TryLater


class InFlight(TryLater):
    """Some records of the batch are still being written: the batch is retried."""


class RawHandler:
    def __init__(self, intake: Intake, max_bytes: int) -> None:
        self.intake = intake
        self.max_bytes = max_bytes

    def __call__(self, messages: list[ConsumerRecord]) -> None:
        items, positions = [], []
        for message in messages:
            if len(message.value or b"") > self.max_bytes:
                self.intake.publisher.dead_letter(
                    message.topic,
                    f"message of {len(message.value)} bytes exceeds the limit of {self.max_bytes}",
                    message.value,
                    message.partition,
                    message.offset,
                    field="<record>",
                )
                continue
            try:
                items.append(loads_json(message.value))
                positions.append((message.partition, message.offset))
            except MalformedJSON as exc:
                self.intake.publisher.dead_letter(
                    message.topic,
                    str(exc),
                    message.value,
                    message.partition,
                    message.offset,
                    field="<record>",
                )
        if not items:
            return
        outcome = self.intake.records(items, topics.RAW, positions)
        # Raises if a write failed or timed out: the loop then retries the whole batch (what
        # was written is a duplicate the second time, so nothing is doubled).
        outcome.written.result(timeout=60)
        if outcome.in_flight:
            raise InFlight(f"{len(outcome.in_flight)} record(s) still being written; retrying")
