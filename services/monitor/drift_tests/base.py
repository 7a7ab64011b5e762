"""The interface every drift test implements, and what it returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect: float
    """In the test's own unit; every test's 0.1 is a moderate shift (the default threshold)."""


Sample = Sequence[object] | np.ndarray
"""A column's values: a list from a window, or a float array of a reference kept by the monitor."""


class DriftTest(Protocol):
    name: str

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        """Compare the current window with the reference sample (None values are ignored)."""
        ...


def numeric(values: Sample) -> np.ndarray:
    """Known, finite numbers of a sample as a float array."""
    if isinstance(values, np.ndarray) and values.dtype == float:
        kept: np.ndarray = values[np.isfinite(values)]  # a reference the monitor keeps as an array
        return kept
    array = np.asarray([v for v in values if v is not None], dtype=float)
    finite: np.ndarray = array[np.isfinite(array)]
    return finite


def counts(reference: Sample, current: Sample) -> np.ndarray:
    """The 2 x k table of category counts; categories seen in neither sample are left out."""
    ref = Counter(v for v in reference if v is not None)
    cur = Counter(v for v in current if v is not None)
    categories = sorted(set(ref) | set(cur), key=str)
    return np.array([[ref[c] for c in categories], [cur[c] for c in categories]], dtype=float).reshape(
        2, len(categories)
    )


def no_evidence(name: str) -> TestResult:
    """What a test returns when a sample is empty or has a single category: nothing to see."""
    return TestResult(name, 0.0, 1.0, 0.0)
