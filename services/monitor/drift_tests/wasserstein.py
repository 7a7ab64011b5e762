"""Wasserstein-1 distance for numeric features, normalized by the reference's standard
deviation, so 0.1 means "the mass moved a tenth of a standard deviation" whatever the
feature's unit (Evidently's convention).

The distance has no closed-form null distribution; its significance comes from the KS test on
the same two samples, and the normalized distance is the effect the threshold applies to.

>>> result = Wasserstein()([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
>>> round(result.statistic, 6), round(result.effect, 4)   # moved by 1; reference sd 1.118
(1.0, 0.8944)
"""

from __future__ import annotations

from scipy import stats

from services.monitor.drift_tests.base import Sample, TestResult, no_evidence, numeric
from services.monitor.drift_tests.ks import two_sample

TINY_SPREAD = 1e-12


class Wasserstein:
    name = "wasserstein"

    def __call__(self, reference: Sample, current: Sample) -> TestResult:
        ref, cur = numeric(reference), numeric(current)
        if len(ref) == 0 or len(cur) == 0:
            return no_evidence(self.name)
        distance = float(stats.wasserstein_distance(ref, cur))
        spread = max(float(ref.std()), TINY_SPREAD)
        _, p_value = two_sample(ref, cur)
        return TestResult(self.name, distance, p_value, distance / spread)
