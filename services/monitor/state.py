"""The monitor's decisions, free of faust: feature windows tested against the champion's
reference, the error stream of joined predictions, and the alarm policy.

The faust agents feed it observations and send whatever `DriftDetected` it returns. One drift
event per episode: after an alarm it stays quiet until a new champion resets the reference,
the training run the alarm caused fails (no new model came of it), or `rearm_s` passes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Gauge

from services.monitor.detectors import PageHinkley
from services.monitor.drift_tests import CATEGORICAL, NUMERIC, TestResult
from services.monitor.drift_tests.base import numeric as numeric_sample
from services.monitor.stats import benjamini_hochberg, bonferroni, proportion_drop
from services.monitor.windows import Observation, Window, offsets
from shared.changepoint import change_point, split_p_value
from shared.events import DriftDetected, FeatureDrift
from shared.registry_api import ModelVersion
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings

DRIFT_SCORE = Gauge("ctloop_monitor_drift_score", "Effect size in the last window", ["feature"])
DRIFT_P = Gauge("ctloop_monitor_drift_p_value", "Adjusted-test p-value in the last window", ["feature"])
ACCURACY = Gauge("ctloop_monitor_window_accuracy", "Accuracy of the recent labelled predictions")
PROCESSED = Counter("ctloop_monitor_records_total", "Observations processed", ["kind"])
# NOTE: looked up once: labels() costs more than the increment, once per record
FEATURES_SEEN, PREDICTIONS_SEEN, OUTCOMES_SEEN = (
    PROCESSED.labels(kind) for kind in ("features", "predictions", "outcomes")
)
ALARMS = Counter("ctloop_monitor_drift_events_total", "Drift events emitted", ["kind"])
ROLLBACKS = Counter("ctloop_monitor_rollbacks_requested_total", "Rollbacks asked of the registry")


@dataclass(frozen=True)
class Underperformance:
    """A new champion doing significantly worse on live labels than the one it replaced."""

    current_version: int
    previous_version: int
    current_accuracy: float
    previous_accuracy: float
    p_value: float
    labelled: int

    @property
    def reason(self) -> str:
        return (
            f"auto rollback: v{self.current_version} live accuracy {self.current_accuracy:.3f} over "
            f"{self.labelled} labels, v{self.previous_version} had {self.previous_accuracy:.3f} "
            f"(p={self.p_value:.2g})"
        )


@dataclass(frozen=True)
class ShadowVerdict:
    """The challenger matched or beat the champion on the same labelled records."""

    challenger_version: int
    champion_version: int
    challenger_accuracy: float
    champion_accuracy: float
    labelled: int

    @property
    def reason(self) -> str:
        return (
            f"shadow: v{self.challenger_version} {self.challenger_accuracy:.3f} vs champion "
            f"v{self.champion_version} {self.champion_accuracy:.3f} on the same {self.labelled} labels"
        )


ROLLING = 200
MIN_PREVIOUS_OUTCOMES = 50
OUTCOMES_KEPT = 2000
ONSET_LOOKBACK = 400
REPORTS_KEPT = 20


class MonitorState:
    def __init__(self, settings: MonitorSettings, schema: DatasetSchema, rearm_s: float = 300.0) -> None:
        self.settings = settings
        self.schema = schema
        self.rearm_s = rearm_s
        self.reference: ModelVersion | None = None
        self._reference_columns: dict[str, list[tuple[str, str, Sequence[object]]]] = {}
        self.reports: deque[dict[str, object]] = deque(maxlen=REPORTS_KEPT)
        self.last_alarm: DriftDetected | None = None
        self.last_alarm_event_id: str | None = None
        """The id of the event that carried the last alarm (set by whoever sent it)."""
        self._previous: tuple[int, list[int]] | None = None
        self._promoted_at = -1e9
        self._had_reference = False
        """The replaced champion's version and its last labelled outcomes, for the comparison."""
        self._compared = True
        self._underperformance: Underperformance | None = None
        self.challenger_version: int | None = None
        self.shadow_pairs: list[tuple[bool, bool]] = []
        self._shadow_verdict: ShadowVerdict | None = None
        self._shadow_decided = False
        self._alarm_at: float | None = None
        self.detector: PageHinkley[datetime] = PageHinkley(
            settings.monitor_error_delta, settings.monitor_error_threshold, settings.monitor_min_error_samples
        )
        self._reset_windows()

    def _new_window(self) -> Window:
        s = self.settings
        return Window(
            s.monitor_window_kind,
            s.monitor_window,
            s.monitor_window_s,
            s.monitor_window_slide,
            s.monitor_min_window,
        )

    def _reset_windows(self) -> None:
        self.windows = {"feature": self._new_window(), "prediction": self._new_window()}
        self.previous_closed: list[Observation] = []
        self.outcomes: deque[tuple[datetime, int]] = deque(maxlen=OUTCOMES_KEPT)
        self.drifting_in_a_row = {"feature": 0, "prediction": 0}
        self.first_drifting_start: dict[str, datetime | None] = {"feature": None, "prediction": None}
        self.recent_errors: deque[int] = deque(maxlen=ROLLING)
        self.detector.reset()

    # --- reference -----------------------------------------------------------------------

    def set_reference(self, version: ModelVersion) -> None:
        """A new champion: compare with what it learned from, and start a new episode."""
        if self.reference is not None and len(self.recent_errors) >= MIN_PREVIOUS_OUTCOMES:
            self._previous = (self.reference.version, list(self.recent_errors))
            self._compared = False
        else:
            self._previous, self._compared = None, True
        self.reference = version
        self._reference_columns = {}
        # The very first reference is no promotion to cool down from.
        self._promoted_at = time.monotonic() if self._had_reference else -1e9
        self._had_reference = True
        if self.challenger_version == version.version:
            self.set_challenger(None)  # the challenger was promoted
        else:
            self.shadow_pairs, self._shadow_decided = [], False  # a new champion to compare with
        self._reset_windows()
        self._alarm_at = None

    @property
    def armed(self) -> bool:
        now = time.monotonic()
        if now - self._promoted_at < self.settings.monitor_cooldown_s:
            return False
        if self._alarm_at is None:
            return True
        return now - self._alarm_at >= self.rearm_s

    def training_failed(self, trigger_event_id: str | None) -> bool:
        """The run started by the last alarm (its event id) ended without a new model: the
        episode is over, so watch again now rather than after `rearm_s` (a false alarm must not
        blind the monitor to the real drift that follows). True if it re-armed."""
        if self._alarm_at is None or trigger_event_id is None or trigger_event_id != self.last_alarm_event_id:
            return False
        self._alarm_at = None
        self.drifting_in_a_row = dict.fromkeys(self.drifting_in_a_row, 0)
        self.first_drifting_start = dict.fromkeys(self.first_drifting_start)
        return True

    # --- features ------------------------------------------------------------------------

    def observe_features(
        self, features: dict[str, object], event_time: datetime, source: tuple[str, int, int] | None = None
    ) -> DriftDetected | None:
        """One record's features (from `records` or a champion's prediction) at its event time."""
        FEATURES_SEEN.inc()
        if self.reference is None or self.reference.reference_profile is None:
            return None
        closed = self.windows["feature"].add(Observation(features, event_time, source))
        return self._judge("feature", closed) if closed else None

    def observe_prediction(
        self,
        prediction: object,
        score: float,
        event_time: datetime,
        source: tuple[str, int, int] | None = None,
    ) -> DriftDetected | None:
        """One champion prediction: its class and its top probability."""
        PREDICTIONS_SEEN.inc()
        profile = self.reference.reference_profile if self.reference else None
        if profile is None or not profile.predictions:
            return None  # a reference from before prediction profiles: nothing to compare with
        closed = self.windows["prediction"].add(
            Observation({"prediction.class": str(prediction), "prediction.score": score}, event_time, source)
        )
        return self._judge("prediction", closed) if closed else None

    def _columns(self, kind: str) -> list[tuple[str, str, Sequence[object]]]:
        """(name, type, reference values) of what a window of `kind` is tested on; numeric
        references as float arrays, made once per reference rather than once per window."""
        assert self.reference is not None and self.reference.reference_profile is not None
        if kind not in self._reference_columns:
            profile = self.reference.reference_profile
            if kind == "prediction":
                columns = [
                    ("prediction.class", "categorical", profile.predictions.get("prediction", [])),
                    ("prediction.score", "numeric", profile.predictions.get("score", [])),
                ]
            else:
                columns = [(f.name, f.type, profile.sample.get(f.name, [])) for f in self.schema.features]
            self._reference_columns[kind] = [
                (name, type_, numeric_sample(values) if type_ == "numeric" else list(values))
                for name, type_, values in columns
            ]
        return self._reference_columns[kind]

    def _test(self, kind: str, window: list[Observation]) -> list[FeatureDrift]:
        numeric = NUMERIC[self.settings.monitor_numeric_test]
        categorical = CATEGORICAL[self.settings.monitor_categorical_test]
        results: list[tuple[str, TestResult]] = []
        for name, type_, reference in self._columns(kind):
            current = [o.values.get(name) for o in window]
            test = numeric if type_ == "numeric" else categorical
            results.append((name, test(reference, current)))
        correct = bonferroni if self.settings.monitor_correction == "bonferroni" else benjamini_hochberg
        rejected = correct([r.p_value for _, r in results], self.settings.monitor_alpha)
        verdicts = []
        for (name, result), significant in zip(results, rejected, strict=True):
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
                )
            )
        return verdicts

    def _judge(self, kind: str, window: list[Observation]) -> DriftDetected | None:
        """A window is complete: test it, report it, and apply the alarm policy."""
        verdicts = self._test(kind, window)
        times = [o.time for o in window]
        start, end, size = min(times), max(times), len(window)
        window_offsets = offsets(window)
        drifted = any(v.drifted for v in verdicts)
        self.reports.append(
            {
                "kind": kind,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "window_offsets": window_offsets,
                "size": size,
                "drifted": drifted,
                "features": [v.model_dump() for v in verdicts],
            }
        )
        onset = start
        if kind == "feature":
            onset = self._feature_onset(verdicts, window) if drifted else start
            if not self.windows["feature"].sliding:
                self.previous_closed = window
        if not drifted:
            self.drifting_in_a_row[kind], self.first_drifting_start[kind] = 0, None
            return None
        self.drifting_in_a_row[kind] += 1
        self.first_drifting_start[kind] = self.first_drifting_start[kind] or onset
        if self.drifting_in_a_row[kind] < self.settings.monitor_consecutive or not self.armed:
            return None
        tests = f"{self.settings.monitor_numeric_test}/{self.settings.monitor_categorical_test}"
        return self._alarm(
            DriftDetected(
                model_name=self.schema.name,
                reference_version=self._ref_version(),
                kind=kind,  # type: ignore[arg-type]
                features=verdicts,
                window_start=start,
                window_end=end,
                window_size=size,
                window_offsets=window_offsets,
                onset_time=self.first_drifting_start[kind] or onset,
                detector=f"{tests} + {self.settings.monitor_correction}",
            )
        )

    def _feature_onset(self, verdicts: list[FeatureDrift], window: list[Observation]) -> datetime:
        """Where, in the previous window (tumbling) and this one, the most drifted numeric
        feature changed; the window's start when only categorical features drifted."""
        numeric = [v for v in verdicts if v.drifted and self.schema.feature(v.feature).type == "numeric"]
        if not numeric:
            return min(o.time for o in window)
        name = max(numeric, key=lambda v: v.effect).feature
        known = [
            (o.time, float(o.values[name]))  # type: ignore[arg-type]
            for o in (self.previous_closed + window)
            if o.values.get(name) is not None
        ]
        if not known:
            return min(o.time for o in window)
        return known[change_point([v for _, v in known])][0]

    # --- errors (joined predictions and labels) ------------------------------------------

    def observe_outcome(self, correct: bool, event_time: datetime) -> DriftDetected | None:
        """One labelled prediction of the champion (stamped with the record's time): right?"""
        OUTCOMES_SEEN.inc()
        error = 0 if correct else 1
        self.recent_errors.append(error)
        self.outcomes.append((event_time, error))
        accuracy = 1 - sum(self.recent_errors) / len(self.recent_errors)
        ACCURACY.set(accuracy)
        if not self._compared and len(self.recent_errors) == ROLLING:
            self._compare_with_previous()
        fired = self.detector.update(float(error), event_time)
        detector = "page-hinkley on the error stream"
        baseline = self._baseline_accuracy()
        if not fired and baseline is not None and len(self.recent_errors) == ROLLING:
            n = len(self.recent_errors)
            p_value = proportion_drop(baseline, n - sum(self.recent_errors), n)
            fired = (
                p_value < self.settings.monitor_alpha
                and baseline - accuracy >= self.settings.monitor_min_effect
            )
            detector = f"proportion test vs validation accuracy (p={p_value:.2g})"
        if not fired or not self.armed:
            return None
        # NOTE: Page-Hinkley's own onset (the last minimum of a noisy random walk) can lie far
        # before the change; the CUSUM split of the recent outcomes is a much closer estimate.
        recent = list(self.outcomes)[-ONSET_LOOKBACK:]
        split = change_point([e for _, e in recent])
        onset = recent[split][0]
        since_onset = [e for _, e in recent[split:]]
        times = [t for t, _ in self.outcomes]
        return self._alarm(
            DriftDetected(
                model_name=self.schema.name,
                reference_version=self._ref_version(),
                kind="concept",
                window_start=times[0],
                window_end=event_time,
                window_size=len(self.outcomes),
                onset_time=onset,
                error_rate=sum(since_onset) / len(since_onset),
                baseline_accuracy=baseline,
                detector=detector,
            )
        )

    def _compare_with_previous(self) -> None:
        """Once per champion: is it significantly worse than the champion it replaced?"""
        assert self._previous is not None and self.reference is not None
        self._compared = True
        previous_version, previous_errors = self._previous
        current_errors = list(self.recent_errors)
        p_value = split_p_value(previous_errors + current_errors, len(previous_errors))
        previous_rate = sum(previous_errors) / len(previous_errors)
        current_rate = sum(current_errors) / len(current_errors)
        if (
            p_value < self.settings.monitor_alpha
            and current_rate - previous_rate >= self.settings.monitor_min_effect
        ):
            self._underperformance = Underperformance(
                current_version=self.reference.version,
                previous_version=previous_version,
                current_accuracy=1 - current_rate,
                previous_accuracy=1 - previous_rate,
                p_value=p_value,
                labelled=len(current_errors),
            )
            ROLLBACKS.inc()

    def set_challenger(self, version: int | None) -> None:
        self.challenger_version = version
        self.shadow_pairs, self._shadow_decided, self._shadow_verdict = [], False, None

    def observe_shadow_pair(self, champion_correct: bool, challenger_correct: bool) -> None:
        """One labelled record scored by both: once enough, decide (once) on promotion."""
        if self._shadow_decided or self.challenger_version is None or self.reference is None:
            return
        self.shadow_pairs.append((champion_correct, challenger_correct))
        if len(self.shadow_pairs) < self.settings.monitor_shadow_min_labels:
            return
        self._shadow_decided = True
        champion = sum(c for c, _ in self.shadow_pairs) / len(self.shadow_pairs)
        challenger = sum(c for _, c in self.shadow_pairs) / len(self.shadow_pairs)
        if challenger >= champion - self.settings.monitor_shadow_tolerance:
            self._shadow_verdict = ShadowVerdict(
                challenger_version=self.challenger_version,
                champion_version=self.reference.version,
                challenger_accuracy=challenger,
                champion_accuracy=champion,
                labelled=len(self.shadow_pairs),
            )

    def take_shadow_verdict(self) -> ShadowVerdict | None:
        """The pending promotion of the challenger, if any (handed out once)."""
        found, self._shadow_verdict = self._shadow_verdict, None
        return found

    def take_underperformance(self) -> Underperformance | None:
        """The pending rollback request, if any (handed out once)."""
        found, self._underperformance = self._underperformance, None
        return found

    # --- helpers -------------------------------------------------------------------------

    def _ref_version(self) -> int | None:
        return self.reference.version if self.reference else None

    def _baseline_accuracy(self) -> float | None:
        if self.reference is None or self.reference.reference_profile is None:
            return None
        return self.reference.reference_profile.validation_accuracy

    def _severity(self, drift: DriftDetected) -> str:
        if drift.kind == "concept":
            promised = 1 - (drift.baseline_accuracy or 1.0)
            return "critical" if (drift.error_rate or 0) - promised >= 0.15 else "warning"
        drifted = [f for f in drift.features if f.drifted]
        large = any(f.effect >= 2 * self.settings.monitor_min_effect for f in drifted)
        return "critical" if large or len(drifted) >= 3 else "warning"

    def _alarm(self, drift: DriftDetected) -> DriftDetected:
        drift.severity = self._severity(drift)  # type: ignore[assignment]
        self._alarm_at = time.monotonic()
        self.last_alarm = drift
        ALARMS.labels(drift.kind).inc()
        self.reports.append(
            {**drift.model_dump(mode="json", exclude={"features"}), "kind": "alarm", "drift_kind": drift.kind}
        )
        return drift

    def status(self) -> dict[str, object]:
        errors = list(self.recent_errors)
        return {
            "model_name": self.schema.name,
            "reference_version": self._ref_version(),
            "verdict": "drift" if not self.armed else "ok",
            "armed": self.armed,
            "window_kind": self.settings.monitor_window_kind,
            "window_fill": len(self.windows["feature"]),
            "prediction_window_fill": len(self.windows["prediction"]),
            "window_size": self.settings.monitor_window,
            "recent_accuracy": (1 - sum(errors) / len(errors)) if errors else None,
            "labelled_predictions": len(errors),
            "challenger_version": self.challenger_version,
            "shadow_labelled": len(self.shadow_pairs),
            "error_detector": {
                "n": self.detector.n,
                "statistic": self.detector.statistic,
                "threshold": self.detector.threshold,
            },
            "last_alarm": self.last_alarm.model_dump(mode="json") if self.last_alarm else None,
            "reports": list(self.reports),
        }
