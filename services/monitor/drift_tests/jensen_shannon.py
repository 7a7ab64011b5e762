"""Jensen-Shannon distance between the category distributions (base 2, in [0, 1]) for
categorical features; the distance is the effect.

The p-value is the G-test of homogeneity on the same counts (sparse categories merged as for
chi-square): G = 2 * N * JS divergence weighted by the sample sizes, chi-square distributed
with k - 1 degrees of freedom.

>>> result = JensenShannon()(["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20)
>>> round(result.effect, 4)   # sqrt((KL(p||m) + KL(q||m)) / 2) = sqrt((0.06803 + 0.07818) / 2)
0.2704
"""

from __future__ import annotations

from scipy import stats
from scipy.spatial.distance import jensenshannon

from services.monitor.drift_tests.base import Sample, TestResult, counts, no_evidence
from services.monitor.drift_tests.chi2 import merge_sparse


class JensenShannon:
    name = "jensen_shannon"

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        table = counts(reference, current)
        if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
            return no_evidence(self.name)
        distance = float(jensenshannon(table[0], table[1], base=2))
        merged = merge_sparse(table)
        g, p_value, _, _ = stats.chi2_contingency(merged, correction=False, lambda_="log-likelihood")
        return TestResult(self.name, float(g), float(p_value), distance)
