"""Population Stability Index, for numeric features on reference-quantile bins (deciles) and
for categorical features on the categories: sum over bins of (cur - ref) * ln(cur / ref).
The PSI is the effect (0.1: a moderate shift, 0.25: a large one, by the usual rule of thumb).

Its p-value uses the asymptotic null distribution PSI ~ (1/M + 1/N) * chi2(B - 1) for samples
of sizes M and N over B bins (Yurdakul, 2018). Empty bins get a small floor share so the
logarithm stays finite.

>>> round(PopulationStability()(["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20).effect, 4)
0.4159
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from services.monitor.drift_tests.base import Sample, TestResult, counts, no_evidence, numeric

BINS = 10
FLOOR = 1e-4


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    ref = np.maximum(reference_counts / reference_counts.sum(), FLOOR)
    cur = np.maximum(current_counts / current_counts.sum(), FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts on bins cut at the reference's deciles (ties merged), open at both ends."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:-1]))
    return (
        np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1),
        np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1),
    )


class PopulationStability:
    name = "psi"

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        if any(isinstance(v, str) for v in (*reference[:1], *current[:1])):
            table = counts(reference, current)
            ref_counts, cur_counts = table[0], table[1]
        else:
            ref, cur = numeric(reference), numeric(current)
            if len(ref) == 0 or len(cur) == 0:
                return no_evidence(self.name)
            ref_counts, cur_counts = numeric_counts(ref, cur)
        bins = len(ref_counts)
        if bins < 2 or ref_counts.sum() == 0 or cur_counts.sum() == 0:
            return no_evidence(self.name)
        value = psi(ref_counts, cur_counts)
        scale = 1 / ref_counts.sum() + 1 / cur_counts.sum()
        return TestResult(self.name, value, float(stats.chi2.sf(value / scale, bins - 1)), value)
