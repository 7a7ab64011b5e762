"""Remembers recently written ids for a window, so a retried record counts once.

An id is *in flight* from the moment its write is sent until the broker acknowledges it
(`confirm`) or the write definitively fails (`forget`). A retry that finds its id in flight
must wait: the first write may still land, and sending again could double it.

>>> seen = RecentIds(window_s=60, capacity=10)
>>> seen.reserve("a", now=0), seen.reserve("a", now=1)
(<Seen.NEW: 'new'>, <Seen.IN_FLIGHT: 'in_flight'>)
>>> seen.confirm("a"); seen.reserve("a", now=2)
<Seen.DUPLICATE: 'duplicate'>
>>> seen.reserve("a", now=70)
<Seen.NEW: 'new'>
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict


class Seen(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    DUPLICATE = "duplicate"


class RecentIds:
    def __init__(self, window_s: float, capacity: int) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[str, tuple[float, bool]] = OrderedDict()  # key -> (since, confirmed)
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (since, _) = next(iter(self._seen.items()))
            if now - since <= self.window_s and len(self._seen) <= self.capacity:
                break
            del self._seen[key]

    def reserve(self, key: str, now: float | None = None) -> Seen:
        """NEW (and now in flight), IN_FLIGHT (a write of it is pending) or DUPLICATE."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            entry = self._seen.get(key)
            if entry is None:
                self._seen[key] = (now, False)
                return Seen.NEW
            return Seen.DUPLICATE if entry[1] else Seen.IN_FLIGHT

    def confirm(self, key: str) -> None:
        """The broker acknowledged the write: from now on the id is a duplicate."""
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None:
                self._seen[key] = (entry[0], True)

    def forget(self, key: str) -> None:
        """The write failed for good: let a retry through."""
        with self._lock:
            self._seen.pop(key, None)
