"""The trainer's bounded store of labelled examples, idempotent on record id.

Kafka delivers at least once; a record id seen again replaces nothing and counts once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from operator import attrgetter

from shared.events import Example


class ExampleStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Example] = OrderedDict()
        self._offsets: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.duplicates = 0
        self.added = 0
        """Examples added since the store was made (a run notes it to count new ones)."""

    def add(self, example: Example, partition: int | None = None, offset: int | None = None) -> bool:
        """Add one example (with where it was read from); False when its id is already here."""
        with self._lock:
            if example.record_id in self._items:
                self.duplicates += 1
                return False
            self._items[example.record_id] = example
            if partition is not None and offset is not None:
                self._offsets[example.record_id] = (partition, offset)
            while len(self._items) > self.capacity:
                dropped, _ = self._items.popitem(last=False)
                self._offsets.pop(dropped, None)
            self.added += 1
            return True

    def offset_ranges(self, examples: list[Example]) -> dict[str, list[int]]:
        """Per partition, the first and last source offset of `examples`."""
        ranges: dict[int, list[int]] = {}
        with self._lock:
            where = [self._offsets.get(e.record_id) for e in examples]
        for partition, offset in filter(None, where):
            bounds = ranges.get(partition)
            if bounds is None:
                ranges[partition] = [offset, offset]
            elif offset < bounds[0]:
                bounds[0] = offset
            elif offset > bounds[1]:
                bounds[1] = offset
        return {str(partition): bounds for partition, bounds in sorted(ranges.items())}

    def __len__(self) -> int:
        return len(self._items)

    def snapshot(self, since: datetime | None = None) -> list[Example]:
        """Examples (optionally from `since` on), ordered by event time."""
        with self._lock:
            items = list(self._items.values())
        if since is not None:
            items = [e for e in items if e.event_time >= since]
        return sorted(items, key=attrgetter("event_time", "record_id"))

    def count_since(self, since: datetime) -> int:
        with self._lock:
            return sum(1 for e in self._items.values() if e.event_time >= since)
