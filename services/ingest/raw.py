"""The Kafka door of ingest: bare records from external producers on `raw`, with the same
validation and outcomes as HTTP. Offsets are committed only after the broker acknowledged
the batch's writes."""

from __future__ import annotations

import json

from kafka.consumer.fetcher import ConsumerRecord

from services.ingest.intake import Intake


class RawHandler:
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def __call__(self, messages: list[ConsumerRecord]) -> None:
        items = []
        for message in messages:
            try:
                items.append(json.loads(message.value))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                self.intake.publisher.dead_letter(
                    message.topic,
                    f"malformed JSON: {exc}",
                    message.value,
                    message.partition,
                    message.offset,
                    field="<record>",
                )
        outcome = self.intake.records(items, "kafka:raw") if items else None
        self.intake.publisher.flush(30)
        if outcome is not None:
            for future in outcome.futures:
                future.get(timeout=0)  # raises if the write failed: the loop retries the batch
