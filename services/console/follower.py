"""The console's reader of the loop's topics: every lifecycle event, tested window,
accuracy measurement and dead letter goes into the console's store.

It is an observer: a message that is not a valid event was already dead-lettered by the
service that owns its topic, so the follower counts it and moves on rather than writing a
second dead letter. A database that does not answer holds the batch (`TryLater`) rather than
losing it. Writes are idempotent (the event id is the key) and the consume loop
commits after them, so nothing is lost or doubled across restarts.
"""

from __future__ import annotations

import time

from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter
from sqlalchemy.exc import InterfaceError, OperationalError

from services.console.store import ConsoleStore
from shared import topics
from shared.events import BadEvent, Envelope
from shared.kafka import TryLater

FOLLOWED = (topics.DRIFT, topics.TRAINING, topics.MODELS, topics.MONITORING, topics.DEADLETTER)
PRUNE_EVERY_S = 60.0

STORED = Counter("ctloop_console_events_total", "Events the console read, by topic", ["topic"])
SKIPPED = Counter("ctloop_console_events_skipped_total", "Messages that were not valid events", ["topic"])


class Follower:
    def __init__(self, store: ConsoleStore, dead_letters_keep: int) -> None:
        self.store = store
        self.dead_letters_keep = dead_letters_keep
        self._pruned_at = 0.0

    def handle(self, messages: list[ConsumerRecord]) -> None:
        """Store a batch (the consume loop commits after this returns). A database that does
        not answer is a cause outside the messages: the loop holds the batch until it does
        (and `/healthz` says so) instead of dead-lettering the history."""
        valid: list[tuple[str, Envelope]] = []
        for message in messages:
            try:
                event = Envelope.decode(message.value)
                event.parsed()
            except BadEvent:
                SKIPPED.labels(message.topic).inc()
                continue
            valid.append((message.topic, event))
        try:
            self.store.add(event for _, event in valid)
            if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
                self._pruned_at = time.monotonic()
                self.store.prune_dead_letters(self.dead_letters_keep)
        except (OperationalError, InterfaceError) as exc:
            raise TryLater(f"the console's database: {exc}") from exc
        for topic, _ in valid:
            STORED.labels(topic).inc()
