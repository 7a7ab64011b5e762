"""Page-Hinkley: a sequential detector of an increase in the mean of a stream (here the 0/1
error stream of joined predictions and labels), with an estimate of when the change began.

>>> ph = PageHinkley(delta=0.005, threshold=15, min_samples=30)
>>> stream = [0] * 300 + [1, 0] * 100
>>> fired = [i for i, x in enumerate(stream) if ph.update(x, i)]
>>> fired[0], ph.onset
(330, 300)
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class PageHinkley(Generic[T]):
    def __init__(self, delta: float, threshold: float, min_samples: int) -> None:
        self.delta = delta
        self.threshold = threshold
        self.min_samples = min_samples
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.cumulative = 0.0
        self.minimum = 0.0
        self._at_minimum: T | None = None
        self._after_minimum: T | None = None
        self.onset: T | None = None
        self.drift_detected = False

    @property
    def statistic(self) -> float:
        return self.cumulative - self.minimum

    def update(self, x: float, stamp: T) -> bool:
        """Add one observation (with a stamp: its time or index); True when drift is detected.

        The onset is the stamp right after the cumulative sum last reached its minimum:
        the point from which the mean rose.
        """
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.cumulative += x - self.mean - self.delta
        if self.cumulative <= self.minimum or self._at_minimum is None:
            self.minimum = min(self.minimum, self.cumulative)
            self._at_minimum = stamp
            self._after_minimum = None
        elif self._after_minimum is None:
            self._after_minimum = stamp
        self.drift_detected = self.n >= self.min_samples and self.statistic > self.threshold
        if self.drift_detected:
            self.onset = self._after_minimum if self._after_minimum is not None else self._at_minimum
        return self.drift_detected
