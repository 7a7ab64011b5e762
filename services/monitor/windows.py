"""Windows over a live stream of observations: count- or time-based, tumbling or sliding,
with a minimum size before any verdict.

`add` returns the window's contents whenever one is complete and due for a test:

- count, tumbling: every `size` observations, disjoint.
- count, sliding: the last `size` observations, every `slide` new ones.
- time, tumbling: the observations of each `seconds`-long span of event time; a span with
  fewer than `min_size` stays open until it has them (a quiet hour is not a verdict).
- time, sliding: the last `seconds` of event time, every `slide` seconds.

Event time (the record's own time) decides, not arrival, so replays and tests see the same
windows. Each observation keeps where it came from (topic, partition, offset), so a drift
event can name the exact records it judged.

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 11, 21, tzinfo=UTC)
>>> window = Window(kind="count", size=3, slide=0, min_size=1)
>>> [len(w) if w else None for w in (window.add(Observation({}, t0)) for _ in range(7))]
[None, None, 3, None, None, 3, None]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a microsecond per record
class Observation:
    values: dict[str, object]
    time: datetime
    source: tuple[str, int, int] | None = field(default=None)
    """(topic, partition, offset) of the event it came from."""


def offsets(observations: list[Observation]) -> dict[str, list[int]]:
    """`topic/partition` -> [first, last] offset among the observations."""
    ranges: dict[str, list[int]] = {}
    for o in observations:
        if o.source is None:
            continue
        topic, partition, offset = o.source
        key = f"{topic}/{partition}"
        low, high = ranges.get(key, [offset, offset])
        ranges[key] = [min(low, offset), max(high, offset)]
    return ranges


class Window:
    def __init__(
        self,
        kind: Literal["count", "time"] = "count",
        size: int = 500,
        seconds: float = 60.0,
        slide: float = 0.0,
        min_size: int = 50,
    ) -> None:
        self.kind = kind
        self.size = size
        self.span = timedelta(seconds=seconds)
        self.slide = slide
        self.min_size = min_size
        self.sliding = slide > 0
        self._items: deque[Observation] = deque(maxlen=size if kind == "count" and self.sliding else None)
        self._since_test = 0
        self._last_test: datetime | None = None

    def __len__(self) -> int:
        return len(self._items)

    def reset(self) -> None:
        self._items.clear()
        self._since_test, self._last_test = 0, None

    def add(self, observation: Observation) -> list[Observation] | None:
        if self.kind == "count":
            return self._add_count(observation)
        return self._add_time(observation)

    def _add_count(self, observation: Observation) -> list[Observation] | None:
        self._items.append(observation)
        self._since_test += 1
        if len(self._items) < max(self.size, self.min_size):
            return None
        if not self.sliding:
            closed = list(self._items)
            self._items.clear()
            return closed
        if self._since_test >= self.slide:
            self._since_test = 0
            return list(self._items)
        return None

    def _add_time(self, observation: Observation) -> list[Observation] | None:
        now = observation.time
        if not self.sliding:
            start = self._items[0].time if self._items else now
            if now - start >= self.span and len(self._items) >= self.min_size:
                closed = list(self._items)
                self._items.clear()
                self._items.append(observation)
                return closed
            self._items.append(observation)
            return None
        self._items.append(observation)
        while self._items and now - self._items[0].time > self.span:
            self._items.popleft()
        if self._last_test is None:
            self._last_test = now
        if now - self._last_test >= timedelta(seconds=self.slide) and len(self._items) >= self.min_size:
            self._last_test = now
            return list(self._items)
        return None
