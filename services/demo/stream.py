"""A seeded classification stream whose concept changes abruptly at a known record.

Before the drift the label is `x1 + x2 > 0`; from `drift_at` on it is `x1 - x2 > 0` (the rule
changes, which feature tests cannot see) and `x3` shifts by one standard deviation (which
they can). A few labels are flipped at random as noise.

>>> s = ConceptStream(seed=1, drift_at=2)
>>> [r["id"] for r, _ in s.take(3)]
['d-0', 'd-1', 'd-2']
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any


class ConceptStream:
    def __init__(self, seed: int = 7, drift_at: int = 3000, noise: float = 0.03, prefix: str = "d") -> None:
        self.rng = random.Random(seed)
        self.drift_at = drift_at
        self.noise = noise
        self.prefix = prefix
        self.index = 0

    def next(self) -> tuple[dict[str, Any], int]:
        """The next record (without its label) and its label."""
        rng, i = self.rng, self.index
        drifted = i >= self.drift_at
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        x3 = rng.gauss(1.0 if drifted else 0.0, 1)
        label = int((x1 - x2 if drifted else x1 + x2) > 0)
        if rng.random() < self.noise:
            label = 1 - label
        record = {
            "id": f"{self.prefix}-{i}",
            "features": {
                "x1": round(x1, 4),
                "x2": round(x2, 4),
                "x3": round(x3, 4),
                "amount": round(rng.expovariate(1 / 50), 2),
                "color": rng.choice(["red", "green", "blue"]),
            },
        }
        self.index += 1
        return record, label

    def take(self, n: int) -> Iterator[tuple[dict[str, Any], int]]:
        for _ in range(n):
            yield self.next()
