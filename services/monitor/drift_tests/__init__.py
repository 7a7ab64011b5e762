"""Two-sample drift tests, one module each, behind one small interface (`base.DriftTest`).

Every test compares a feature's reference sample (from the champion's training data) with
the current window and returns a p-value and an effect size in its own unit. A feature
drifts when the corrected p-value is significant *and* the effect reaches the threshold, so
verdicts do not flip with the window size (Evidently #50, #509).

    numeric:      ks (default), wasserstein, psi
    categorical:  chi2 (default), jensen_shannon, psi
"""

from __future__ import annotations

from services.monitor.drift_tests.base import DriftTest, TestResult
from services.monitor.drift_tests.chi2 import Chi2
from services.monitor.drift_tests.jensen_shannon import JensenShannon
from services.monitor.drift_tests.ks import KolmogorovSmirnov
from services.monitor.drift_tests.psi import PopulationStability
from services.monitor.drift_tests.wasserstein import Wasserstein

NUMERIC: dict[str, DriftTest] = {
    "ks": KolmogorovSmirnov(),
    "wasserstein": Wasserstein(),
    "psi": PopulationStability(),
}
CATEGORICAL: dict[str, DriftTest] = {
    "chi2": Chi2(),
    "jensen_shannon": JensenShannon(),
    "psi": PopulationStability(),
}

__all__ = ["CATEGORICAL", "NUMERIC", "DriftTest", "TestResult"]
