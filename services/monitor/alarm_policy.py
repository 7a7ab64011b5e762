"""The alarm policy: turns the detectors' verdicts into at most one drift event per episode.

A distribution alarm needs `monitor_consecutive` drifted windows in a row; any alarm needs
the policy to be armed: not within `monitor_cooldown_records` records and labels of a promotion
(at most `monitor_cooldown_s`: the new champion's first windows are judged against a fresh
reference), and not after an alarm until the episode ends: a new champion, the failure of the
run the alarm caused, or `monitor_rearm_records` records and labels (at most `rearm_s`).
Periods are counted in data, with time only as a bound, so that a fast stream is not left
unwatched for thousands of records and a slow one not for ever.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import Counter

from shared.events import DriftDetected
from shared.settings import MonitorSettings
from shared.vocabulary import DriftKind, Severity, WindowedKind

ALARMS = Counter("ctloop_monitor_drift_events_total", "Drift events emitted", ["kind"])


class AlarmPolicy:
    def __init__(self, settings: MonitorSettings, rearm_s: float = 300.0) -> None:
        self.settings = settings
        self.rearm_s = rearm_s
        self.last_alarm: DriftDetected | None = None
        self.last_alarm_event_id: str | None = None
        """The id of the event that carried the last alarm (`alarm_sent`)."""
        self._promoted_at = -1e9
        self._had_reference = False
        self._alarm_at: float | None = None
        self._seen = 0
        """Records and labels observed (`observed`): the clock the periods are counted on."""
        self._seen_at_promotion = 0
        self._seen_at_alarm = 0
        self._reset_streaks()

    def _reset_streaks(self) -> None:
        kinds: tuple[WindowedKind, ...] = (
            DriftKind.FEATURE,
            DriftKind.PREDICTION,
            DriftKind.ESTIMATED_PERFORMANCE,
        )
        self.drifting_in_a_row: dict[WindowedKind, int] = dict.fromkeys(kinds, 0)
        self.first_drifting_start: dict[WindowedKind, datetime | None] = dict.fromkeys(kinds)

    def new_champion(self) -> None:
        """A new reference: a new episode, after a cooldown (the very first reference is no
        promotion to cool down from)."""
        self._promoted_at = time.monotonic() if self._had_reference else -1e9
        self._seen_at_promotion = self._seen if self._had_reference else -(10**12)
        self._had_reference = True
        self._alarm_at = None
        self._reset_streaks()

    def observed(self, count: int = 1) -> None:
        """`count` more records or labels seen by this worker."""
        self._seen += count

    @property
    def armed(self) -> bool:
        now, settings = time.monotonic(), self.settings
        if (
            now - self._promoted_at < settings.monitor_cooldown_s
            and self._seen - self._seen_at_promotion < settings.monitor_cooldown_records
        ):
            return False
        if self._alarm_at is None:
            return True
        return (
            now - self._alarm_at >= self.rearm_s
            or self._seen - self._seen_at_alarm >= settings.monitor_rearm_records
        )

    def window(self, kind: WindowedKind, drifted: bool, onset: datetime) -> datetime | None:
        """One closed window's verdict; the episode's onset when an alarm is due now."""
        if not drifted:
            self.drifting_in_a_row[kind], self.first_drifting_start[kind] = 0, None
            return None
        self.drifting_in_a_row[kind] += 1
        self.first_drifting_start[kind] = self.first_drifting_start[kind] or onset
        if self.drifting_in_a_row[kind] < self.settings.monitor_consecutive or not self.armed:
            return None
        return self.first_drifting_start[kind] or onset

    def alarm(self, drift: DriftDetected) -> DriftDetected:
        """Raise `drift`: rate its severity and start the episode."""
        drift.severity = self.severity(drift)
        self._alarm_at, self._seen_at_alarm = time.monotonic(), self._seen
        self.last_alarm = drift
        ALARMS.labels(drift.kind).inc()
        return drift

    def alarm_sent(self, event_id: str) -> None:
        """The last alarm went out as event `event_id` (runs answering it name it)."""
        self.last_alarm_event_id = event_id

    def training_failed(self, trigger_event_id: str | None) -> bool:
        """The run started by the last alarm (its event id) ended without a new model: the
        episode is over, so watch again now rather than after `rearm_s` (a false alarm must not
        blind the monitor to the real drift that follows). True if it re-armed."""
        if self._alarm_at is None or trigger_event_id is None or trigger_event_id != self.last_alarm_event_id:
            return False
        self._alarm_at = None
        self._reset_streaks()
        return True

    def severity(self, drift: DriftDetected) -> Severity:
        """`critical` for a large effect (twice the minimum, or three features or more) or an
        error rate since the onset 15 points above what validation promised."""
        if drift.kind == DriftKind.CONCEPT:
            promised = 1 - (drift.baseline_accuracy or 1.0)
            return "critical" if (drift.error_rate or 0) - promised >= 0.15 else "warning"
        if drift.kind == DriftKind.ESTIMATED_PERFORMANCE:
            drop = (drift.baseline_accuracy or 0.0) - (drift.estimated_accuracy or 0.0)
            return "critical" if drop >= 0.15 else "warning"
        drifted = [f for f in drift.features if f.drifted]
        large = any(f.effect >= 2 * self.settings.monitor_min_effect for f in drifted)
        return "critical" if large or len(drifted) >= 3 else "warning"
