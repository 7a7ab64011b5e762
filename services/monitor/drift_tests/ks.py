"""Two-sample Kolmogorov-Smirnov for numeric features; the effect is the KS statistic itself
(the largest gap between the two empirical CDFs, in [0, 1]).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = KolmogorovSmirnov()
>>> same = test(list(rng.normal(size=1000)), list(rng.normal(size=500)))
>>> shifted = test(list(rng.normal(size=1000)), list(rng.normal(1.0, size=500)))
>>> same.p_value > 0.01, shifted.p_value < 1e-6, round(shifted.effect, 2) > 0.3
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy import stats

from services.monitor.drift_tests.base import TestResult, no_evidence, numeric


class KolmogorovSmirnov:
    name = "ks"

    def __call__(self, reference: Sequence[object], current: Sequence[object]) -> TestResult:
        ref, cur = numeric(reference), numeric(current)
        if len(ref) == 0 or len(cur) == 0:
            return no_evidence(self.name)
        result = stats.ks_2samp(ref, cur)
        return TestResult(self.name, float(result.statistic), float(result.pvalue), float(result.statistic))
