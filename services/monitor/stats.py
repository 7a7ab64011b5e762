"""Two-sample drift tests per feature type, with an effect size beside each p-value, and the
Benjamini-Hochberg correction across features.

The effect size keeps verdicts from flipping with window size: a huge window makes tiny,
harmless differences "significant"; requiring both a small p-value and a real effect does not.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> same = ks_numeric(rng.normal(size=1000), rng.normal(size=500))
>>> shifted = ks_numeric(rng.normal(size=1000), rng.normal(1.0, size=500))
>>> same.p_value > 0.01, shifted.p_value < 1e-6, round(shifted.effect, 2) > 0.3
(True, True, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect: float


def ks_numeric(reference: Sequence[float], current: Sequence[float]) -> TestResult:
    """Two-sample Kolmogorov-Smirnov; the effect is the KS statistic itself (max CDF gap)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return TestResult("ks", 0.0, 1.0, 0.0)
    result = stats.ks_2samp(ref, cur)
    return TestResult("ks", float(result.statistic), float(result.pvalue), float(result.statistic))


def chi2_categorical(reference: Sequence[object], current: Sequence[object]) -> TestResult:
    """Chi-square test of homogeneity on the 2 x k table of category counts; the effect is
    Cramér's V. Categories seen in neither sample are left out (no zero columns)."""
    ref_counts = Counter(v for v in reference if v is not None)
    cur_counts = Counter(v for v in current if v is not None)
    categories = sorted(set(ref_counts) | set(cur_counts), key=str)
    if len(categories) < 2 or not ref_counts or not cur_counts:
        return TestResult("chi2", 0.0, 1.0, 0.0)
    table = np.array([[ref_counts[c] for c in categories], [cur_counts[c] for c in categories]])
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    n = table.sum()
    cramers_v = float(np.sqrt(chi2 / (n * (min(table.shape) - 1))))
    return TestResult("chi2", float(chi2), float(p_value), cramers_v)


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses are rejected at false-discovery rate `alpha`.

    >>> benjamini_hochberg([0.001, 0.02, 0.03, 0.5], alpha=0.05)
    [True, True, True, False]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    cutoff = -1
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= alpha * rank / m:
            cutoff = rank
    rejected = [False] * m
    for rank, i in enumerate(order, start=1):
        rejected[i] = rank <= cutoff
    return rejected


def bonferroni(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses are rejected at family-wise error `alpha` (stricter than BH).

    >>> bonferroni([0.001, 0.02, 0.03, 0.5], alpha=0.05)
    [True, False, False, False]
    """
    return [p <= alpha / max(len(p_values), 1) for p in p_values]


def proportion_drop(baseline: float, successes: int, n: int) -> float:
    """One-sided p-value that the success rate fell below `baseline` (normal approximation).

    >>> round(proportion_drop(0.9, 60, 100), 6)
    0.0
    """
    if n == 0:
        return 1.0
    baseline = min(max(baseline, 1e-6), 1 - 1e-6)
    z = (baseline - successes / n) / np.sqrt(baseline * (1 - baseline) / n)
    return float(stats.norm.sf(z))
