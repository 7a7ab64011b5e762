"""Seeded classification streams whose concept (or inputs) change at known records.

The demo runs the `abrupt` kind; the loop benchmark runs them all. Before the change the
label is `x1 + x2 > 0`. The kinds:

- `abrupt`: from `drift_at` on the label is `x1 - x2 > 0` (the rule changes, which feature
  tests cannot see) and `x3` shifts by one standard deviation (which they can).
- `noisy`: `abrupt` with 10% of the labels flipped instead of 3%.
- `gradual`: over `width` records from `drift_at` each record follows the new rule with a
  probability rising linearly from 0 to 1 (and `x3` shifts as far).
- `recurring`: the new rule holds for `period` records from `drift_at`, then the old one for
  `period`, and so on (seasons).
- `covariate`: the rule never changes; from `drift_at` `x1` moves by 1.5 standard deviations
  and `x3` by one (inputs shift, the concept does not).
- `harmful-covariate`: the rule never changes; from `drift_at` `x1` and `x2` shrink to a
  quarter of their spread, onto the boundary where the model is least sure (accuracy falls
  with no change of concept).
- `stationary`: nothing changes.

A few labels are flipped at random as noise.

>>> s = ConceptStream(seed=1, drift_at=2)
>>> [r["id"] for r, _ in s.take(3)]
['d-0', 'd-1', 'd-2']
>>> ConceptStream(kind="recurring", drift_at=100, period=50).changes(260)
[100, 150, 200, 250]
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, Literal, Protocol, get_args

StreamKind = Literal[
    "abrupt", "noisy", "gradual", "recurring", "covariate", "harmful-covariate", "stationary"
]
STREAM_KINDS: tuple[StreamKind, ...] = get_args(StreamKind)


class RecordStream(Protocol):
    """What the demo driver streams: records with ids `<prefix>-<index>`, and their labels."""

    index: int
    """The index of the next record."""

    def take(self, n: int) -> Iterator[tuple[dict[str, Any], int]]: ...


class ConceptStream:
    def __init__(
        self,
        seed: int = 7,
        drift_at: int = 3000,
        noise: float | None = None,
        prefix: str = "d",
        kind: StreamKind = "abrupt",
        width: int = 4000,
        period: int = 2000,
    ) -> None:
        if kind not in STREAM_KINDS:
            raise ValueError(f"unknown stream kind {kind!r}: one of {', '.join(STREAM_KINDS)}")
        self.rng = random.Random(seed)
        self.drift_at = drift_at
        self.noise = noise if noise is not None else (0.10 if kind == "noisy" else 0.03)
        self.prefix = prefix
        self.kind = kind
        self.width = width
        self.period = period
        self.index = 0

    def changes(self, length: int) -> list[int]:
        """The records (below `length`) where the concept or the inputs start to change."""
        if self.kind == "stationary":
            return []
        if self.kind == "gradual":
            points = [self.drift_at, self.drift_at + self.width]
        elif self.kind == "recurring":
            points = list(range(self.drift_at, length, self.period))
        else:
            points = [self.drift_at]
        return [p for p in points if p < length]

    def _new_concept_share(self, i: int) -> float:
        """How much of the new concept record `i` follows (a probability for `gradual`)."""
        if i < self.drift_at or self.kind in ("stationary", "covariate", "harmful-covariate"):
            return 0.0
        if self.kind == "gradual":
            return min(1.0, (i - self.drift_at + 1) / self.width)
        if self.kind == "recurring":
            return 1.0 if ((i - self.drift_at) // self.period) % 2 == 0 else 0.0
        return 1.0

    def next(self) -> tuple[dict[str, Any], int]:
        """The next record (without its label) and its label."""
        rng, i = self.rng, self.index
        share = self._new_concept_share(i)
        shifted = i >= self.drift_at
        spread = 0.25 if shifted and self.kind == "harmful-covariate" else 1.0
        x1 = rng.gauss(1.5 if shifted and self.kind == "covariate" else 0.0, spread)
        x2 = rng.gauss(0, spread)
        x3 = rng.gauss(share if self.kind != "covariate" else float(shifted), 1)
        # a draw only while the change is gradual: the abrupt stream stays what it always was
        follows_new = share >= 1.0 or (share > 0.0 and rng.random() < share)
        label = int((x1 - x2 if follows_new else x1 + x2) > 0)
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
