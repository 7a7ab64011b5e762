"""Two-sample Kolmogorov-Smirnov for numeric features; the effect is the KS statistic itself
(the largest gap between the two empirical CDFs, in [0, 1]).

The p-value is the asymptotic one (scipy's `ks_2samp(..., method="asymp")`: the exact
distribution of the statistic at the effective size n*m/(n+m)), computed here without
scipy's per-call wrapper. scipy's default for samples under 10,000 is the exact p-value: it
cost 0.7 ms per feature and window, half of the monitor's own work per record, and differs
from the asymptotic one by about 3% of the p-value at these sizes (1,000 vs 500: 0.0275 vs
0.0266), which moves no verdict that the effect threshold does not already decide.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = KolmogorovSmirnov()
>>> same = test(list(rng.normal(size=1000)), list(rng.normal(size=500)))
>>> shifted = test(list(rng.normal(size=1000)), list(rng.normal(1.0, size=500)))
>>> same.p_value > 0.01, shifted.p_value < 1e-6, round(shifted.effect, 2) > 0.3
(True, True, True)
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats

from services.monitor.drift_tests.base import Sample, TestResult, no_evidence, numeric


class KolmogorovSmirnov:
    name = "ks"

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        ref, cur = numeric(reference), numeric(current)
        if len(ref) == 0 or len(cur) == 0:
            return no_evidence(self.name)
        statistic, p_value = two_sample(ref, cur)
        return TestResult(self.name, statistic, p_value, statistic)


def two_sample(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """The KS statistic of two non-empty float samples and its asymptotic two-sided p-value."""
    ref, cur = np.sort(ref), np.sort(cur)
    both = np.concatenate([ref, cur])
    gaps = np.searchsorted(ref, both, side="right") / len(ref) - np.searchsorted(
        cur, both, side="right"
    ) / len(cur)
    statistic = float(np.max(np.abs(gaps)))
    effective_size = round(len(ref) * len(cur) / (len(ref) + len(cur)))
    return statistic, _survival(statistic, effective_size)


@functools.lru_cache(maxsize=4096)
def _survival(statistic: float, effective_size: int) -> float:
    # NOTE: remembered: with fixed sample sizes the statistic takes few distinct values (multiples
    # of 1/lcm(n, m)), and kstwo.sf costs ~100 us a call, ten calls a window.
    return float(np.clip(stats.kstwo.sf(statistic, effective_size), 0.0, 1.0))
