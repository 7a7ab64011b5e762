"""Remembers recently accepted ids for a window, so a retried record counts once.

>>> seen = RecentIds(window_s=60, capacity=2)
>>> seen.check_and_add("a", now=0), seen.check_and_add("a", now=1), seen.check_and_add("a", now=70)
(False, True, False)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class RecentIds:
    def __init__(self, window_s: float, capacity: int) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, key: str, now: float | None = None) -> bool:
        """True when `key` was added within the window (a duplicate); else remember it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._seen:
                oldest_key, seen_at = next(iter(self._seen.items()))
                if now - seen_at <= self.window_s and len(self._seen) <= self.capacity:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return True
            self._seen[key] = now
            return False

    def forget(self, key: str) -> None:
        """Undo an add whose write failed, so that the client's retry is not a 'duplicate'."""
        with self._lock:
            self._seen.pop(key, None)
