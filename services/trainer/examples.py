"""The trainer's bounded store of labelled examples, idempotent on record id.

Kafka delivers at least once; a record id seen again replaces nothing and counts once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from shared.events import Example


class ExampleStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Example] = OrderedDict()
        self._lock = threading.Lock()
        self.duplicates = 0

    def add(self, example: Example) -> bool:
        """Add one example; False when its record id is already here."""
        with self._lock:
            if example.record_id in self._items:
                self.duplicates += 1
                return False
            self._items[example.record_id] = example
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self, since: datetime | None = None) -> list[Example]:
        """Examples (optionally from `since` on), ordered by event time."""
        with self._lock:
            items = list(self._items.values())
        if since is not None:
            items = [e for e in items if e.event_time >= since]
        return sorted(items, key=lambda e: (e.event_time, e.record_id))

    def count_since(self, since: datetime) -> int:
        with self._lock:
            return sum(1 for e in self._items.values() if e.event_time >= since)
