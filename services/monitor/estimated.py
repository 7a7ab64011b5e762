"""Estimated performance: the champion's accuracy on a window of its predictions, estimated
from its own confidence before any label arrives (the idea behind NannyML's CBPE).

The champion's reference profile holds its holdout predictions' scores (the top class's
probability) and whether each was right. An isotonic fit of right-or-wrong on score turns a
score into the chance the prediction is right; the mean of that over a window is the expected
accuracy there. On the holdout itself the mean is the holdout's accuracy, so a significant fall
below it says the inputs moved to where the model is less sure — a covariate shift that
matters, seen as soon as the predictions are, not when the labels come.

Known limit: a concept change leaves the model as sure as before (it is confidently wrong), so
this does not see it; the error stream does (`quality.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Gauge
from scipy.optimize import isotonic_regression

from shared.registry_api import ReferenceProfile

ESTIMATED = Gauge(
    "ctloop_monitor_estimated_accuracy",
    "The champion's accuracy on the last prediction window, estimated from its confidence",
)

MIN_REFERENCE = 50
"""Holdout predictions needed to calibrate (fewer: no estimate)."""


@dataclass(frozen=True)
class EstimatedAccuracy:
    """One window's estimate against the holdout's."""

    estimate: float
    interval: tuple[float, float]
    """95% interval of the estimate (its sampling error and the holdout's)."""
    reference: float
    """The holdout's accuracy as the calibration sees it (its mean calibrated score)."""
    p_value: float
    """One-sided: the window's expected accuracy is below the holdout's."""
    size: int

    def dropped(self, alpha: float, min_drop: float) -> bool:
        return self.p_value < alpha and self.reference - self.estimate >= min_drop


class ConfidenceCalibration:
    """Score -> the chance the champion's prediction is right, fitted on its holdout."""

    def __init__(self, scores: np.ndarray, correct: np.ndarray) -> None:
        order = np.argsort(scores, kind="stable")
        self.scores = scores[order]
        self.chances = np.asarray(isotonic_regression(correct[order].astype(float)).x)
        self.reference = float(self.chances.mean())
        self._reference_var = float(self.chances.var())
        self._reference_n = len(self.chances)

    @classmethod
    def of(cls, profile: ReferenceProfile | None) -> ConfidenceCalibration | None:
        """The calibration a reference profile allows (None: no holdout outcomes in it)."""
        if profile is None:
            return None
        scores, correct = profile.predictions.get("score", []), profile.predictions.get("correct", [])
        if len(correct) < MIN_REFERENCE or len(correct) != len(scores):
            return None
        return cls(np.asarray(scores, dtype=float), np.asarray(correct, dtype=float))

    def chance(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """The chance each prediction is right (the nearest holdout scores' fit, interpolated)."""
        chances: np.ndarray = np.interp(np.asarray(scores, dtype=float), self.scores, self.chances)
        return chances

    def estimate(self, scores: Sequence[float] | np.ndarray) -> EstimatedAccuracy:
        chances = self.chance(scores)
        n = len(chances)
        estimate = float(chances.mean())
        # The spread of chances on the holdout stands for both samples' (under no shift they
        # are draws from the same distribution); a floor keeps a nearly constant calibration
        # from calling any wiggle significant.
        variance = max(self._reference_var, 1e-4)
        se = math.sqrt(variance / n + variance / self._reference_n)
        z = (self.reference - estimate) / se
        return EstimatedAccuracy(
            estimate=estimate,
            interval=(max(0.0, estimate - 1.96 * se), min(1.0, estimate + 1.96 * se)),
            reference=self.reference,
            p_value=0.5 * math.erfc(z / math.sqrt(2)),
            size=n,
        )
