"""Remembers recently written ids for a window, so a retried record counts once.

An id is *in flight* from the moment its write is sent until the broker acknowledges it
(`settle(written=...)`) or the write definitively fails (`settle(failed=...)`). A retry that
finds its id in flight must wait: the first write may still land, and sending again could
double it. Ids are reserved and settled a batch at a time: one lock per request, not per id.

>>> seen = RecentIds(window_s=60, capacity=10)
>>> seen.reserve_all(["a", "b", "a"], now=0)
[<Seen.NEW: 'new'>, <Seen.NEW: 'new'>, <Seen.DUPLICATE: 'duplicate'>]
>>> seen.reserve_all(["a"], now=1)
[<Seen.IN_FLIGHT: 'in_flight'>]
>>> seen.settle(written=["a"], failed=["b"]); seen.reserve_all(["a", "b"], now=2)
[<Seen.DUPLICATE: 'duplicate'>, <Seen.NEW: 'new'>]
>>> seen.reserve_all(["a"], now=70)
[<Seen.NEW: 'new'>]
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable


class Seen(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    DUPLICATE = "duplicate"


class RecentIds:
    def __init__(self, window_s: float, capacity: int) -> None:
        self.window_s = window_s
        self.capacity = capacity
        # key -> (since, confirmed); a dict keeps insertion order, so the oldest id is first
        self._seen: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (since, _) = next(iter(self._seen.items()))
            if now - since <= self.window_s and len(self._seen) <= self.capacity:
                break
            del self._seen[key]

    def reserve_all(self, keys: Iterable[str], now: float | None = None) -> list[Seen]:
        """Per key: NEW (and now in flight), IN_FLIGHT (an earlier write of it is pending) or
        DUPLICATE (written already, or repeated within `keys`)."""
        now = time.monotonic() if now is None else now
        seen = self._seen
        answers: list[Seen] = []
        with self._lock:
            self._expire(now)
            fresh: set[str] = set()
            for key in keys:
                entry = seen.get(key)
                if entry is None:
                    seen[key] = (now, False)
                    fresh.add(key)
                    answers.append(Seen.NEW)
                elif key in fresh or entry[1]:
                    answers.append(Seen.DUPLICATE)
                else:
                    answers.append(Seen.IN_FLIGHT)
        return answers

    def settle(self, written: Iterable[str] = (), failed: Iterable[str] = ()) -> None:
        """The broker acknowledged `written` (from now on duplicates); `failed` failed for good
        (a retry goes through)."""
        seen = self._seen
        with self._lock:
            for key in written:
                entry = seen.get(key)
                if entry is not None:
                    seen[key] = (entry[0], True)
            for key in failed:
                seen.pop(key, None)
