"""The monitor's decisions, free of faust: the parts that watch the champion, put together.

- `DistributionDrift` (`distribution.py`): feature and prediction windows tested against the
  champion's reference profile, and its accuracy estimated from its confidence
  (`estimated.py`) on each prediction window;
- `LiveQuality` (`quality.py`): the error stream of joined predictions and labels;
- `ReplacedChampion`, `ShadowComparison` (`comparison.py`): rollback and shadow verdicts;
- `AlarmPolicy` (`alarm_policy.py`): at most one drift event per episode.

The faust agents (`agents.py`) feed `MonitorState` observations and send whatever
`DriftDetected` it returns; it keeps the last windows' reports for `GET /v1/drift/status`,
and hands the agents each tested window (`take_tested`) and the live accuracy since the last
measurement (`take_quality`) for the `monitoring` topic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.monitor.alarm_policy import AlarmPolicy
from services.monitor.comparison import ReplacedChampion, ShadowComparison, ShadowVerdict, Underperformance
from services.monitor.distribution import DistributionDrift, Source, WindowVerdict
from services.monitor.estimated import ESTIMATED, EstimatedAccuracy
from services.monitor.quality import LiveQuality
from services.monitor.windows import Window
from shared.events import DriftDetected, FeatureDrift, QualityMeasured, WindowTested
from shared.registry_api import ModelVersion
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings
from shared.vocabulary import DistributionKind, DriftKind

REPORTS_KEPT = 20
TESTED_KEPT = 100
"""Tested windows waiting to be sent (the agents take them after each observation)."""


@dataclass
class QualityTally:
    """Labelled champion predictions (and shadow pairs) since the last measurement."""

    version: int
    first: datetime
    last: datetime
    labelled: int = 0
    correct: int = 0
    challenger: int | None = None
    shadow_labelled: int = 0
    shadow_champion_correct: int = 0
    shadow_challenger_correct: int = 0


class MonitorState:
    def __init__(self, settings: MonitorSettings, schema: DatasetSchema, rearm_s: float = 300.0) -> None:
        self.settings = settings
        self.schema = schema
        self.reference: ModelVersion | None = None
        self.reports: deque[dict[str, object]] = deque(maxlen=REPORTS_KEPT)
        self.distribution = DistributionDrift(settings, schema)
        self.quality = LiveQuality(settings)
        self.replaced = ReplacedChampion(settings)
        self.shadow = ShadowComparison(settings)
        self.policy = AlarmPolicy(settings, rearm_s)
        self.tested: deque[WindowTested] = deque(maxlen=TESTED_KEPT)
        self.tallies: dict[int, QualityTally] = {}
        """Per champion version: what `take_quality` reports next."""
        self._last_features: list[FeatureDrift] = []
        """The last feature window's verdicts (an estimated-performance alarm names them)."""
        self._last_estimate: EstimatedAccuracy | None = None
        """The last prediction window's estimated accuracy (a feature alarm carries it: does
        the shift matter?)."""

    # --- what the agents tell it ---------------------------------------------------------

    def set_reference(self, version: ModelVersion) -> None:
        """A new champion: compare with what it learned from, and start a new episode."""
        replaced = self.reference.version if self.reference is not None else None
        self.replaced.promoted(replaced, self.quality.recent_errors)
        self.reference = version
        self.shadow.new_champion(version.version)
        self.distribution.reset(version.reference_profile)
        self._last_features, self._last_estimate = [], None
        self.quality.reset()
        self.policy.new_champion()

    def set_challenger(self, version: int | None) -> None:
        self.shadow.set_challenger(version)

    def observe_features(
        self, features: dict[str, object], event_time: datetime, source: Source | None = None
    ) -> DriftDetected | None:
        """One record's features (from `records` or a champion's prediction) at its event time."""
        self.policy.observed()
        return self._judge(self.distribution.observe_features(features, event_time, source))

    def observe_prediction(
        self, prediction: object, score: float, event_time: datetime, source: Source | None = None
    ) -> DriftDetected | None:
        """One champion prediction: its class and its top probability."""
        return self._judge(self.distribution.observe_prediction(prediction, score, event_time, source))

    def observe_outcome(self, correct: bool, event_time: datetime) -> DriftDetected | None:
        """One labelled prediction of the champion (stamped with the record's time): right?"""
        self.policy.observed()
        self._count_outcome(correct, event_time)
        baseline = self._baseline_accuracy()
        fired = self.quality.observe(correct, event_time, baseline)
        if self.reference is not None and self.quality.full:
            self.replaced.check(self.reference.version, self.quality.recent_errors)
        if fired is None or not self.policy.armed:
            return None
        drop = self.quality.drop(fired)
        return self._alarm(
            DriftKind.CONCEPT,
            window_start=drop.first,
            window_end=drop.last,
            window_size=drop.outcomes,
            onset_time=drop.onset,
            error_rate=drop.error_rate,
            baseline_accuracy=baseline,
            detector=drop.detector,
        )

    def observe_shadow_pair(self, champion_correct: bool, challenger_correct: bool) -> None:
        """One labelled record scored by both the champion and the challenger."""
        if self.reference is not None:
            self.shadow.observe(self.reference.version, champion_correct, challenger_correct)
        version = self._ref_version()
        if version is not None and (tally := self.tallies.get(version)) is not None:
            tally.challenger = self.shadow.challenger_version
            tally.shadow_labelled += 1
            tally.shadow_champion_correct += champion_correct
            tally.shadow_challenger_correct += challenger_correct

    def training_failed(self, trigger_event_id: str | None) -> bool:
        """The run for the last alarm failed: True if that re-armed the policy."""
        return self.policy.training_failed(trigger_event_id)

    def alarm_sent(self, event_id: str) -> None:
        self.policy.alarm_sent(event_id)

    # --- what it hands back --------------------------------------------------------------

    def take_shadow_verdict(self) -> ShadowVerdict | None:
        return self.shadow.take_verdict()

    def take_tested(self) -> list[WindowTested]:
        """The windows tested since the last call, oldest first."""
        tested = list(self.tested)
        self.tested.clear()
        return tested

    def take_quality(self) -> list[QualityMeasured]:
        """The champions' labelled predictions since the last call, one per version."""
        tallies, self.tallies = self.tallies, {}
        return [
            QualityMeasured(
                model_name=self.schema.name,
                model_version=tally.version,
                labelled=tally.labelled,
                correct=tally.correct,
                first_event_time=tally.first,
                last_event_time=tally.last,
                challenger_version=tally.challenger,
                shadow_labelled=tally.shadow_labelled,
                shadow_champion_correct=tally.shadow_champion_correct,
                shadow_challenger_correct=tally.shadow_challenger_correct,
                environment=self.settings.monitor_environment,
            )
            for tally in tallies.values()
        ]

    def take_underperformance(self) -> Underperformance | None:
        return self.replaced.take_underperformance()

    @property
    def armed(self) -> bool:
        return self.policy.armed

    @property
    def challenger_version(self) -> int | None:
        return self.shadow.challenger_version

    @property
    def windows(self) -> dict[DistributionKind, Window]:
        return self.distribution.windows

    def status(self) -> dict[str, object]:
        last = self.policy.last_alarm
        return {
            "model_name": self.schema.name,
            "reference_version": self._ref_version(),
            "verdict": "drift" if not self.armed else "ok",
            "armed": self.armed,
            "window_kind": self.settings.monitor_window_kind,
            "window_fill": len(self.windows[DriftKind.FEATURE]),
            "prediction_window_fill": len(self.windows[DriftKind.PREDICTION]),
            "window_size": self.settings.monitor_window,
            **self.quality.status(),
            "challenger_version": self.shadow.challenger_version,
            "shadow_labelled": len(self.shadow.pairs),
            "last_alarm": last.model_dump(mode="json") if last else None,
            "reports": list(self.reports),
        }

    # --- helpers -------------------------------------------------------------------------

    def _judge(self, verdict: WindowVerdict | None) -> DriftDetected | None:
        """A window closed: report it, and raise an alarm if the policy says so."""
        if verdict is None:
            return None
        if verdict.kind == DriftKind.FEATURE:
            self._last_features = verdict.features
        if verdict.estimated is not None:
            self._last_estimate = verdict.estimated
        self.reports.append(verdict.report())
        self.tested.append(
            WindowTested(
                model_name=self.schema.name,
                reference_version=self._ref_version(),
                kind=verdict.kind,
                window_start=verdict.start,
                window_end=verdict.end,
                size=verdict.size,
                drifted=verdict.drifted,
                alpha=self.settings.monitor_alpha,
                min_effect=self.settings.monitor_min_effect,
                features=verdict.features,
                histograms=verdict.histograms,
                estimated_accuracy=verdict.estimated.estimate if verdict.estimated else None,
            )
        )
        # the more specific alarm first: it disarms the policy, so one window raises one alarm
        estimated = self._judge_estimate(verdict)
        onset = self.policy.window(verdict.kind, verdict.drifted, verdict.onset)
        if estimated is not None or onset is None:
            return estimated
        tests = f"{self.settings.monitor_numeric_test}/{self.settings.monitor_categorical_test}"
        return self._alarm(
            verdict.kind,
            **self._window_fields(verdict, onset, verdict.features, self._last_estimate),
            detector=f"{tests} + {self.settings.monitor_correction}",
        )

    def _judge_estimate(self, verdict: WindowVerdict) -> DriftDetected | None:
        """A prediction window's estimated accuracy: an alarm when it fell significantly (in
        `monitor_consecutive` windows in a row)."""
        if (estimated := verdict.estimated) is None:
            return None
        ESTIMATED.set(estimated.estimate)
        dropped = estimated.dropped(self.settings.monitor_alpha, self.settings.monitor_estimated_min_drop)
        onset = self.policy.window(DriftKind.ESTIMATED_PERFORMANCE, dropped, verdict.start)
        if onset is None:
            return None
        # NOTE: the features are ranked by their last window's effect size: which of them the
        # model's confidence depends on is not known here.
        features = sorted(self._last_features, key=lambda f: (f.drifted, f.effect), reverse=True)
        return self._alarm(
            DriftKind.ESTIMATED_PERFORMANCE,
            **self._window_fields(verdict, onset, features, estimated),
            detector=f"confidence-based estimate (isotonic), z-test p={estimated.p_value:.2g}",
        )

    @staticmethod
    def _window_fields(
        verdict: WindowVerdict,
        onset: datetime,
        features: list[FeatureDrift],
        estimated: EstimatedAccuracy | None,
    ) -> dict[str, Any]:
        """A window alarm's event fields: the window, its onset, the features, the estimate."""
        return {
            "features": features,
            "window_start": verdict.start,
            "window_end": verdict.end,
            "window_size": verdict.size,
            "window_offsets": verdict.offsets,
            "onset_time": onset,
            "baseline_accuracy": estimated.reference if estimated else None,
            "estimated_accuracy": estimated.estimate if estimated else None,
            "estimated_interval": list(estimated.interval) if estimated else None,
        }

    def _alarm(self, kind: DriftKind, **fields: Any) -> DriftDetected:
        """Raise a drift of `kind` about the current champion (`fields`: the rest of the event)."""
        drift = DriftDetected(
            model_name=self.schema.name,
            reference_version=self._ref_version(),
            kind=kind,
            environment=self.settings.monitor_environment,
            **fields,
        )
        self.policy.alarm(drift)
        self.reports.append(
            {**drift.model_dump(mode="json", exclude={"features"}), "kind": "alarm", "drift_kind": drift.kind}
        )
        return drift

    def _count_outcome(self, correct: bool, event_time: datetime) -> None:
        version = self._ref_version()
        if version is None:
            return
        tally = self.tallies.setdefault(version, QualityTally(version, event_time, event_time))
        tally.labelled += 1
        tally.correct += correct
        tally.first = min(tally.first, event_time)
        tally.last = max(tally.last, event_time)

    def _ref_version(self) -> int | None:
        return self.reference.version if self.reference else None

    def _baseline_accuracy(self) -> float | None:
        if self.reference is None or self.reference.reference_profile is None:
            return None
        return self.reference.reference_profile.validation_accuracy
