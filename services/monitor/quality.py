"""Live quality: the champion's error stream on joined predictions and late labels.

Two detectors watch it: Page-Hinkley on the stream of errors, and a proportion test of the
last `ROLLING` outcomes against the accuracy validation promised. When one fires, the onset
is placed by a CUSUM split of the recent outcomes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Gauge

from services.monitor.detectors import PageHinkley
from services.monitor.distribution import PROCESSED
from services.monitor.stats import proportion_drop
from shared.changepoint import change_point
from shared.settings import MonitorSettings

ACCURACY = Gauge("ctloop_monitor_window_accuracy", "Accuracy of the recent labelled predictions")
OUTCOMES_SEEN = PROCESSED.labels("outcomes")

ROLLING = 200
OUTCOMES_KEPT = 2000
ONSET_LOOKBACK = 400


@dataclass(frozen=True)
class QualityDrop:
    """The champion's accuracy fell: which detector said so and since when."""

    detector: str
    onset: datetime
    error_rate: float
    """The error rate since the onset."""
    first: datetime
    last: datetime
    outcomes: int


class LiveQuality:
    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.detector: PageHinkley[datetime] = PageHinkley(
            settings.monitor_error_delta, settings.monitor_error_threshold, settings.monitor_min_error_samples
        )
        self.reset()

    def reset(self) -> None:
        self.outcomes: deque[tuple[datetime, int]] = deque(maxlen=OUTCOMES_KEPT)
        self.recent_errors: deque[int] = deque(maxlen=ROLLING)
        self.detector.reset()

    @property
    def full(self) -> bool:
        """`ROLLING` outcomes are in: enough for the proportion test and the comparison."""
        return len(self.recent_errors) == ROLLING

    @property
    def accuracy(self) -> float | None:
        errors = self.recent_errors
        return 1 - sum(errors) / len(errors) if errors else None

    def observe(self, correct: bool, event_time: datetime, baseline: float | None) -> str | None:
        """One labelled prediction of the champion; the detector that fired, if one did.
        `baseline` is the accuracy validation promised (None: no proportion test)."""
        OUTCOMES_SEEN.inc()
        error = 0 if correct else 1
        self.recent_errors.append(error)
        self.outcomes.append((event_time, error))
        accuracy = 1 - sum(self.recent_errors) / len(self.recent_errors)
        ACCURACY.set(accuracy)
        if self.detector.update(float(error), event_time):
            return "page-hinkley on the error stream"
        if baseline is not None and self.full:
            n = len(self.recent_errors)
            p_value = proportion_drop(baseline, n - sum(self.recent_errors), n)
            if (
                p_value < self.settings.monitor_alpha
                and baseline - accuracy >= self.settings.monitor_min_effect
            ):
                return f"proportion test vs validation accuracy (p={p_value:.2g})"
        return None

    def drop(self, detector: str) -> QualityDrop:
        """What a fired detector found, with the onset from the recent outcomes.

        NOTE: Page-Hinkley's own onset (the last minimum of a noisy random walk) can lie far
        before the change; the CUSUM split of the recent outcomes is a much closer estimate."""
        recent = list(self.outcomes)[-ONSET_LOOKBACK:]
        split = change_point([e for _, e in recent])
        since_onset = [e for _, e in recent[split:]]
        return QualityDrop(
            detector=detector,
            onset=recent[split][0],
            error_rate=sum(since_onset) / len(since_onset),
            first=self.outcomes[0][0],
            last=self.outcomes[-1][0],
            outcomes=len(self.outcomes),
        )

    def status(self) -> dict[str, object]:
        return {
            "recent_accuracy": self.accuracy,
            "labelled_predictions": len(self.recent_errors),
            "error_detector": {
                "n": self.detector.n,
                "statistic": self.detector.statistic,
                "threshold": self.detector.threshold,
            },
        }
