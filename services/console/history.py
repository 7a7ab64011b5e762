"""What the console's pages show, computed from stored events: free of HTTP and SQL, so that
each rule (what a loop's outcome is, which version served when, what a chart holds) is one
function with a unit test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.console.store import StoredEvent

STEP_NAMES = {
    "drift.detected": "drift detected",
    "training.started": "run started",
    "training.completed": "run completed",
    "training.failed": "run failed",
    "model.registered": "version registered",
    "model.promoted": "promoted",
    "model.swapped": "serving swapped",
    "model.swap_failed": "serving refused the swap",
}


@dataclass
class Step:
    name: str
    at: float
    after_s: float | None
    """Seconds since the step before it (None for the first)."""
    event: StoredEvent


@dataclass
class Loop:
    """One loop: the events of one correlation id, from its trigger to its swap."""

    correlation_id: str
    steps: list[Step] = field(default_factory=list)
    trigger: str = ""
    drift_kind: str | None = None
    onset: str | None = None
    run_id: str | None = None
    gates: str | None = None
    version: int | None = None
    promoted_to: str | None = None
    swapped_at: float | None = None
    outcome: str = "in progress"

    @property
    def began(self) -> float:
        return self.steps[0].at if self.steps else 0.0

    @property
    def took_s(self) -> float:
        return self.steps[-1].at - self.steps[0].at if self.steps else 0.0


def loops(events: Iterable[StoredEvent]) -> list[Loop]:
    """Each correlation id's events as a `Loop`, newest loop first."""
    grouped: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in events:
        grouped[event.correlation_id].append(event)
    built = [loop_of(cid, sorted(found, key=lambda e: e.occurred_at)) for cid, found in grouped.items()]
    return sorted(built, key=lambda loop: loop.began, reverse=True)


def loop_of(correlation_id: str, events: Sequence[StoredEvent]) -> Loop:
    """The loop these events (oldest first) make."""
    loop = Loop(correlation_id)
    previous: float | None = None
    for event in events:
        payload = event.payload
        name = STEP_NAMES.get(event.type, event.type)
        if event.type == "model.promoted":
            name = f"promoted to {payload.get('alias')}"
            if _is_rollback(payload):
                name = f"rolled back to v{payload.get('version')}"
        loop.steps.append(
            Step(name, event.occurred_at, None if previous is None else event.occurred_at - previous, event)
        )
        previous = event.occurred_at
        if event.type == "drift.detected":
            loop.trigger = "drift"
            loop.drift_kind = payload.get("kind")
            loop.onset = payload.get("onset_time")
        elif event.type.startswith("training."):
            loop.trigger = loop.trigger or str(payload.get("trigger", ""))
            loop.run_id = payload.get("run_id")
            if event.type == "training.completed":
                loop.gates = "passed"
                loop.version = payload.get("version")
                loop.outcome = f"v{loop.version} trained"
            elif event.type == "training.failed":
                failed = payload.get("failed_gate")
                loop.gates = f"failed: {failed}" if failed else None
                loop.outcome = f"run failed ({failed or payload.get('reason') or 'error'})"
        elif event.type == "model.registered":
            loop.version = payload.get("version")
            loop.outcome = f"v{loop.version} registered"
        elif event.type == "model.promoted":
            loop.trigger = loop.trigger or ("rollback" if _is_rollback(payload) else "promotion")
            loop.promoted_to = payload.get("alias")
            loop.version = loop.version or payload.get("version")
            loop.outcome = f"v{payload.get('version')} {payload.get('alias')}"
        elif event.type == "model.swapped":
            loop.swapped_at = loop.swapped_at or event.occurred_at
            loop.outcome = f"v{payload.get('version')} serving"
        elif event.type == "model.swap_failed":
            loop.outcome = f"swap to v{payload.get('version')} refused"
    return loop


def _is_rollback(payload: dict[str, Any]) -> bool:
    """A champion moved back to an older version: a rollback (by a person or the monitor)."""
    version, previous = payload.get("version"), payload.get("previous_version")
    return (
        payload.get("alias") == "champion"
        and previous is not None
        and version is not None
        and version < previous
    )


@dataclass
class Timeline:
    """Which version each serving instance answered with, as a chart draws it: `x` the times
    of every change, `series` per instance the version from that time on (None before its
    first swap), and the rollbacks' times."""

    x: list[float]
    series: dict[str, list[int | None]]
    rollbacks: list[tuple[float, int]]


def served_timeline(swaps: Sequence[StoredEvent], promotions: Sequence[StoredEvent], now: float) -> Timeline:
    """From `model.swapped` events (each instance's swaps) and `model.promoted` ones (for the
    rollbacks); the last value is held until `now`."""
    changes: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for swap in sorted(swaps, key=lambda e: e.occurred_at):
        changes[swap.source].append((swap.occurred_at, int(swap.payload["version"])))
    x = sorted({at for found in changes.values() for at, _ in found})
    if x:
        x.append(max(now, x[-1]))
    series: dict[str, list[int | None]] = {}
    for instance, found in sorted(changes.items()):
        values: list[int | None] = []
        current: int | None = None
        pending = list(found)
        for at in x:
            while pending and pending[0][0] <= at:
                current = pending.pop(0)[1]
            values.append(current)
        series[instance] = values
    rollbacks = [(p.occurred_at, int(p.payload["version"])) for p in promotions if _is_rollback(p.payload)]
    return Timeline(x, series, rollbacks)


@dataclass
class FeatureSeries:
    """One tested column over time: what the drift page draws per feature. Each point is a
    bucket of windows (one window while there are few): its lowest adjusted p-value, its
    largest effect, and whether any of its windows drifted."""

    feature: str
    x: list[float] = field(default_factory=list)
    adjusted_p: list[float | None] = field(default_factory=list)
    effect: list[float] = field(default_factory=list)
    drifted: list[bool] = field(default_factory=list)
    windows: int = 0
    times_drifted: int = 0
    alpha: float = 0.0
    min_effect: float = 0.0

    @property
    def largest_effect(self) -> float:
        return max(self.effect, default=0.0)


def feature_series(rows: Iterable[Any]) -> list[FeatureSeries]:
    """Rows of (feature, window_end, adjusted_p_value, effect, drifted (a count), windows,
    alpha, min_effect), oldest first, as one series per feature, the most drifted first."""
    by_feature: dict[str, FeatureSeries] = {}
    for row in rows:
        series = by_feature.setdefault(row.feature, FeatureSeries(row.feature))
        series.x.append(row.window_end)
        series.adjusted_p.append(row.adjusted_p_value)
        series.effect.append(row.effect)
        series.drifted.append(bool(row.drifted))
        series.windows += row.windows
        series.times_drifted += row.drifted
        series.alpha, series.min_effect = row.alpha, row.min_effect
    return sorted(by_feature.values(), key=lambda s: (-s.times_drifted, -s.largest_effect, s.feature))


@dataclass
class AccuracySeries:
    x: list[float]
    champion: list[float | None]
    challenger: list[float | None]
    shadow_champion: list[float | None]
    labelled: int


def accuracy_series(rows: Sequence[Any], max_points: int = 400) -> AccuracySeries:
    """Live accuracy per measurement (rows of the `quality` table, oldest first), merged into
    at most `max_points` buckets of equal time so that a week of measurements stays a light
    chart; the challenger's and the champion's accuracy on the records both scored beside."""
    if not rows:
        return AccuracySeries([], [], [], [], 0)
    start, end = rows[0].occurred_at, rows[-1].occurred_at
    width = max((end - start) / max_points, 1e-9)
    buckets: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        buckets[min(int((row.occurred_at - start) / width), max_points - 1)].append(row)
    x: list[float] = []
    champion: list[float | None] = []
    challenger: list[float | None] = []
    shadow_champion: list[float | None] = []
    for _, group in sorted(buckets.items()):
        x.append(group[-1].occurred_at)
        labelled = sum(r.labelled for r in group)
        champion.append(sum(r.correct for r in group) / labelled if labelled else None)
        paired = sum(r.shadow_labelled for r in group)
        challenger.append(sum(r.shadow_challenger_correct for r in group) / paired if paired else None)
        shadow_champion.append(sum(r.shadow_champion_correct for r in group) / paired if paired else None)
    return AccuracySeries(x, champion, challenger, shadow_champion, sum(r.labelled for r in rows))
