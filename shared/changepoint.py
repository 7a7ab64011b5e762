"""Where did the mean of a sequence change? A single change-point estimate and its test.

The monitor uses it to place a drift's onset, the trainer to refine that onset once many
post-change examples have arrived (an early onset would mix the old concept into training).

>>> change_point([0] * 30 + [1] * 10)
30
>>> split_p_value([0] * 30 + [1] * 10, 30) < 1e-6
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def change_point(values: Sequence[float]) -> int:
    """Index of the first element after the most likely change in mean: the split k that
    maximizes |S_k - (k/n) S_n| (the CUSUM estimate of a single change point)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return 0
    deviations = np.cumsum(x - x.mean())[:-1]
    return int(np.argmax(np.abs(deviations))) + 1


def split_p_value(values: Sequence[float], k: int) -> float:
    """One-sided p-value that the mean of values[k:] exceeds that of values[:k] (a two-
    proportion z-test for 0/1 values, a normal approximation otherwise)."""
    before, after = np.asarray(values[:k], dtype=float), np.asarray(values[k:], dtype=float)
    if len(before) == 0 or len(after) == 0:
        return 1.0
    pooled = np.concatenate([before, after])
    variance = pooled.var() * (1 / len(before) + 1 / len(after))
    if variance <= 0:
        return 0.0 if after.mean() > before.mean() else 1.0
    z = (after.mean() - before.mean()) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))
