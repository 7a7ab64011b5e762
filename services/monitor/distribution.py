"""Feature and prediction drift: windows of what the champion sees, tested against what it
learned from.

Each record's features (and each champion prediction's class and score) go into a window;
when one closes, every column is tested against the champion's reference profile with the
configured test, the p-values corrected for the number of columns, and the window comes back
as a `WindowVerdict`; a prediction window also carries the champion's accuracy estimated from
its confidence (`estimated.py`). Whether a verdict is worth an alarm is the alarm policy's
decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Gauge

from services.monitor.drift_tests import CATEGORICAL, NUMERIC, TestResult
from services.monitor.drift_tests.base import Sample
from services.monitor.drift_tests.base import numeric as numeric_sample
from services.monitor.estimated import ConfidenceCalibration, EstimatedAccuracy
from services.monitor.histograms import histogram
from services.monitor.stats import adjusted_p_values, benjamini_hochberg, bonferroni
from services.monitor.windows import Observation, Window, offsets
from shared.changepoint import change_point
from shared.events import ColumnHistogram, FeatureDrift
from shared.registry_api import ReferenceProfile
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings
from shared.vocabulary import DistributionKind, DriftKind

DRIFT_SCORE = Gauge("ctloop_monitor_drift_score", "Effect size in the last window", ["feature"])
DRIFT_P = Gauge("ctloop_monitor_drift_p_value", "Adjusted-test p-value in the last window", ["feature"])
PROCESSED = Counter("ctloop_monitor_records_total", "Observations processed", ["kind"])
# NOTE: looked up once: labels() costs more than the increment, once per record
FEATURES_SEEN, PREDICTIONS_SEEN = (PROCESSED.labels(kind) for kind in ("features", "predictions"))

Source = tuple[str, int, int]
"""(topic, partition, offset) of the event an observation came from."""


@dataclass(frozen=True)
class WindowVerdict:
    """One closed window, tested: each column's result and where the change seems to begin."""

    kind: DistributionKind
    features: list[FeatureDrift]
    start: datetime
    end: datetime
    size: int
    offsets: dict[str, list[int]]
    onset: datetime
    """The change point of the most drifted numeric feature (features), else the start."""
    histograms: list[ColumnHistogram]
    """Each column's window and reference distributions, on shared bins."""
    estimated: EstimatedAccuracy | None = None
    """Prediction windows: the champion's accuracy estimated from its confidence."""

    @property
    def drifted(self) -> bool:
        return any(v.drifted for v in self.features)

    def report(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "window_offsets": self.offsets,
            "size": self.size,
            "drifted": self.drifted,
            "features": [v.model_dump() for v in self.features],
            **({"estimated_accuracy": self.estimated.estimate} if self.estimated else {}),
        }


class DistributionDrift:
    """The feature and prediction windows of one champion, and their tests."""

    def __init__(self, settings: MonitorSettings, schema: DatasetSchema) -> None:
        self.settings = settings
        self.schema = schema
        self.profile: ReferenceProfile | None = None
        self._columns_of: dict[str, list[tuple[str, str, Sample]]] = {}
        self.reset(None)

    def reset(self, profile: ReferenceProfile | None) -> None:
        """A new reference (or none): empty windows, tested against `profile` from now on."""
        s = self.settings
        self.profile = profile
        self.calibration = ConfidenceCalibration.of(profile) if s.monitor_estimated_performance else None
        self._columns_of = {}
        self.windows: dict[DistributionKind, Window] = {
            kind: Window(
                s.monitor_window_kind,
                s.monitor_window,
                s.monitor_window_s,
                s.monitor_window_slide,
                s.monitor_min_window,
            )
            for kind in (DriftKind.FEATURE, DriftKind.PREDICTION)
        }
        self.previous_closed: list[Observation] = []

    def observe_features(
        self, features: dict[str, object], event_time: datetime, source: Source | None = None
    ) -> WindowVerdict | None:
        FEATURES_SEEN.inc()
        if self.profile is None:
            return None
        closed = self.windows[DriftKind.FEATURE].add(Observation(features, event_time, source))
        return self._judge(DriftKind.FEATURE, closed) if closed else None

    def observe_prediction(
        self, prediction: object, score: float, event_time: datetime, source: Source | None = None
    ) -> WindowVerdict | None:
        PREDICTIONS_SEEN.inc()
        if self.profile is None or not self.profile.predictions:
            return None  # a reference from before prediction profiles: nothing to compare with
        closed = self.windows[DriftKind.PREDICTION].add(
            Observation({"prediction.class": str(prediction), "prediction.score": score}, event_time, source)
        )
        return self._judge(DriftKind.PREDICTION, closed) if closed else None

    def _judge(self, kind: DistributionKind, window: list[Observation]) -> WindowVerdict:
        verdicts = self._test(kind, window)
        times = [o.time for o in window]
        start = min(times)
        onset = start
        if kind == DriftKind.FEATURE:
            if any(v.drifted for v in verdicts):
                onset = self._feature_onset(verdicts, window)
            if not self.windows[DriftKind.FEATURE].sliding:
                self.previous_closed = window
        histograms = [
            histogram(name, type_, reference, [o.values.get(name) for o in window])
            for name, type_, reference in self._columns(kind)
        ]
        estimated = None
        if kind == DriftKind.PREDICTION and self.calibration is not None:
            # a score that is no number (a NaN in a predictions event) would make the whole
            # window's estimate NaN, silently: it is left out, as the score test leaves it out
            scores = numeric_sample([o.values.get("prediction.score") for o in window])
            estimated = self.calibration.estimate(scores) if len(scores) else None
        return WindowVerdict(
            kind, verdicts, start, max(times), len(window), offsets(window), onset, histograms, estimated
        )

    def _columns(self, kind: DistributionKind) -> list[tuple[str, str, Sample]]:
        """(name, type, reference values) of what a window of `kind` is tested on; numeric
        references as float arrays, made once per reference rather than once per window."""
        assert self.profile is not None
        if kind not in self._columns_of:
            profile = self.profile
            if kind == DriftKind.PREDICTION:
                columns: list[tuple[str, str, Sample]] = [
                    ("prediction.class", "categorical", profile.predictions.get("prediction", [])),
                    ("prediction.score", "numeric", profile.predictions.get("score", [])),
                ]
            else:
                columns = [(f.name, f.type, profile.sample.get(f.name, [])) for f in self.schema.features]
            self._columns_of[kind] = [
                (name, type_, numeric_sample(values) if type_ == "numeric" else list(values))
                for name, type_, values in columns
            ]
        return self._columns_of[kind]

    def _test(self, kind: DistributionKind, window: list[Observation]) -> list[FeatureDrift]:
        numeric = NUMERIC[self.settings.monitor_numeric_test]
        categorical = CATEGORICAL[self.settings.monitor_categorical_test]
        results: list[tuple[str, TestResult]] = []
        for name, type_, reference in self._columns(kind):
            current = [o.values.get(name) for o in window]
            test = numeric if type_ == "numeric" else categorical
            results.append((name, test(reference, current)))
        correct = bonferroni if self.settings.monitor_correction == "bonferroni" else benjamini_hochberg
        p_values = [r.p_value for _, r in results]
        rejected = correct(p_values, self.settings.monitor_alpha)
        adjusted = adjusted_p_values(p_values, self.settings.monitor_correction)
        verdicts = []
        for (name, result), significant, p_adjusted in zip(results, rejected, adjusted, strict=True):
            DRIFT_SCORE.labels(name).set(result.effect)
            DRIFT_P.labels(name).set(result.p_value)
            verdicts.append(
                FeatureDrift(
                    feature=name,
                    test=result.test,
                    statistic=result.statistic,
                    p_value=result.p_value,
                    effect=result.effect,
                    drifted=significant and result.effect >= self.settings.monitor_min_effect,
                    adjusted_p_value=p_adjusted,
                )
            )
        return verdicts

    def _feature_onset(self, verdicts: list[FeatureDrift], window: list[Observation]) -> datetime:
        """Where, in the previous window (tumbling) and this one, the most drifted numeric
        feature changed; the window's start when only categorical features drifted."""
        numeric = [v for v in verdicts if v.drifted and self.schema.feature(v.feature).type == "numeric"]
        if not numeric:
            return min(o.time for o in window)
        name = max(numeric, key=lambda v: v.effect).feature
        known: list[tuple[datetime, float]] = []
        for o in self.previous_closed + window:
            value = o.values.get(name)
            if isinstance(value, int | float):
                known.append((o.time, float(value)))
        if not known:
            return min(o.time for o in window)
        return known[change_point([v for _, v in known])][0]
