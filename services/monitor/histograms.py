"""A tested window's distributions beside the reference's, on shared bins, for the drift
history the console draws (`WindowTested.histograms`).

Numeric columns get `HISTOGRAM_BINS` equal-width bins over both samples' range; categorical
ones the `MAX_CATEGORIES` most frequent categories of both, the rest counted as `(other)`.
The bounds keep a window's event small whatever the data (a free-text column would otherwise
carry every distinct value).

>>> h = histogram("x", "numeric", [0.0, 1.0, 2.0, 3.0], [2.5, 3.0], bins=3)
>>> h.edges, h.reference, h.current
([0.0, 1.0, 2.0, 3.0], [1, 1, 2], [0, 0, 2])
>>> histogram("c", "categorical", ["a", "a", "b"], ["b", None]).categories
['a', 'b']
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from services.monitor.drift_tests.base import Sample, numeric
from shared.events import ColumnHistogram

HISTOGRAM_BINS = 20
MAX_CATEGORIES = 20
OTHER = "(other)"


def histogram(
    name: str, type_: str, reference: Sample, current: Sample, bins: int = HISTOGRAM_BINS
) -> ColumnHistogram:
    """`name`'s reference and current counts on the same bins; missing values are left out."""
    if type_ == "numeric":
        return _numeric(name, numeric(reference), numeric(current), bins)
    return _categorical(name, reference, current)


def _numeric(name: str, reference: np.ndarray, current: np.ndarray, bins: int) -> ColumnHistogram:
    both = np.concatenate([reference, current])
    if both.size == 0:
        return ColumnHistogram(feature=name, reference=[], current=[])
    low, high = float(both.min()), float(both.max())
    if low == high:  # one value everywhere: one bin around it
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    ref, _ = np.histogram(reference, edges)
    cur, _ = np.histogram(current, edges)
    return ColumnHistogram(feature=name, edges=edges.tolist(), reference=ref.tolist(), current=cur.tolist())


def _categorical(name: str, reference: Sample, current: Sample) -> ColumnHistogram:
    ref = Counter(str(v) for v in reference if v is not None)
    cur = Counter(str(v) for v in current if v is not None)
    ranked = sorted(set(ref) | set(cur), key=lambda c: (-(ref[c] + cur[c]), c))
    kept = sorted(ranked[:MAX_CATEGORIES])
    categories, ref_counts, cur_counts = list(kept), [ref[c] for c in kept], [cur[c] for c in kept]
    if len(ranked) > MAX_CATEGORIES:
        dropped = ranked[MAX_CATEGORIES:]
        categories.append(OTHER)
        ref_counts.append(sum(ref[c] for c in dropped))
        cur_counts.append(sum(cur[c] for c in dropped))
    return ColumnHistogram(feature=name, categories=categories, reference=ref_counts, current=cur_counts)
