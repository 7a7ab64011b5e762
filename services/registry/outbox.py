"""Relays the registry's outbox table to Kafka, in order, marking rows sent once acknowledged.

If the broker is down the rows wait; they are sent when it is back (at least once: consumers
are idempotent on `event_id`). Each pass claims its rows in one transaction, so several
registry replicas on PostgreSQL never relay the same row at the same time. Sent rows beyond
the newest `keep` are pruned once a minute.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaProducer
from prometheus_client import Gauge

from services.registry.store import RegistryStore

log = logging.getLogger(__name__)

PENDING = Gauge("ctloop_registry_outbox_pending", "Events written but not yet acknowledged by Kafka")


class OutboxRelay:
    """A supervised worker (`shared.supervision`); a failure of the store ends `run`, and the
    supervisor starts it again (the rows stay in the outbox meanwhile)."""

    name = "outbox-relay"

    def __init__(
        self,
        store: RegistryStore,
        producer: KafkaProducer,
        keep: int,
        interval_s: float = 0.2,
        prune_every_s: float = 60.0,
    ) -> None:
        self.store = store
        self.producer = producer
        self.keep = keep
        self.interval_s = interval_s
        self.prune_every_s = prune_every_s
        self._stop_event = threading.Event()

    def _send(self, rows: list[tuple[int, str, str, str]]) -> list[int]:
        futures = [
            (row_id, self.producer.send(topic, key=key.encode(), value=value.encode()))
            for row_id, topic, key, value in rows
        ]
        sent = []
        for row_id, future in futures:
            try:
                future.get(timeout=15)
            except Exception as exc:
                log.warning("outbox: broker did not acknowledge event %d (%s); will retry", row_id, exc)
                break  # keep order: nothing after an unsent event is marked sent
            sent.append(row_id)
        return sent

    def relay_once(self) -> int:
        return self.store.relay(self._send)

    def run(self) -> None:
        pruned_at = 0.0
        while not self._stop_event.is_set():
            self.store.outbox_written.clear()
            if self.relay_once():
                continue
            PENDING.set(self.store.pending_count())
            if time.monotonic() - pruned_at >= self.prune_every_s:
                if gone := self.store.prune_outbox(self.keep):
                    log.info("outbox: pruned %d sent events (keeping the newest %d)", gone, self.keep)
                pruned_at = time.monotonic()
            # NOTE: woken by this process's own writes, the promotion that answers a drift is
            # on Kafka at once; polling alone took 0-200 ms (100 ms on average) of the loop's
            # ~1.4 s from the drift to the swap.
            self.store.outbox_written.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.store.outbox_written.set()
