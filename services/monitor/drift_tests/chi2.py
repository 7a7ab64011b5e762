"""Chi-square test of homogeneity on the 2 x k table of category counts; the effect is
Cramér's V. Sparse categories are merged into one "other" column until every expected count
is at least 5 (the chi-square approximation's rule), so rare categories neither vanish nor
make the p-value meaningless.

>>> result = Chi2()(["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20)
>>> round(result.statistic, 2), round(result.effect, 3)   # 225 * (2/65 + 2/35); sqrt(19.78 / 200)
(19.78, 0.314)
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from services.monitor.drift_tests.base import Sample, TestResult, counts, no_evidence

MIN_EXPECTED = 5.0


def merge_sparse(table: np.ndarray) -> np.ndarray:
    """Fold the rarest categories together until each column's expected counts reach 5."""
    order = np.argsort(table.sum(axis=0))
    table = table[:, order]
    share = table.sum(axis=1, keepdims=True) / table.sum()
    while table.shape[1] > 2 and (share * table[:, :1].sum(axis=0)).min() < MIN_EXPECTED:
        merged = table[:, 0] + table[:, 1]
        table = np.column_stack([merged, table[:, 2:]])
        table = table[:, np.argsort(table.sum(axis=0))]
    return table


class Chi2:
    name = "chi2"

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        table = counts(reference, current)
        if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
            return no_evidence(self.name)
        table = merge_sparse(table)
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        cramers_v = float(np.sqrt(chi2 / table.sum()))  # min(2, k) - 1 = 1 for a 2 x k table
        return TestResult(self.name, float(chi2), float(p_value), cramers_v)
