"""The loop's vocabulary as types: event types, aliases, drift kinds, trigger kinds.

Each is a `StrEnum`, so it is written on the wire and in the registry's tables as the plain
string it always was (`Alias.CHAMPION == "champion"`), while code that names one is checked.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class EventType(StrEnum):
    """The `type` of an event envelope; `shared.events.EVENT_PAYLOADS` gives each its payload."""

    RECORD_ACCEPTED = "record.accepted"
    LABEL_ACCEPTED = "label.accepted"
    INPUT_REJECTED = "input.rejected"
    PREDICTION_MADE = "prediction.made"
    EXAMPLE_LABELLED = "example.labelled"
    OUTCOME_JOINED = "outcome.joined"
    DRIFT_DETECTED = "drift.detected"
    RUN_REQUESTED = "run.requested"
    TRAINING_STARTED = "training.started"
    TRAINING_COMPLETED = "training.completed"
    TRAINING_FAILED = "training.failed"
    MODEL_REGISTERED = "model.registered"
    MODEL_PROMOTED = "model.promoted"
    MODEL_SWAPPED = "model.swapped"
    MODEL_SWAP_FAILED = "model.swap_failed"
    WINDOW_TESTED = "window.tested"
    QUALITY_MEASURED = "quality.measured"


class Alias(StrEnum):
    """The registry aliases the loop acts on (the registry accepts other names too)."""

    CHAMPION = "champion"
    """The version serving answers with and the monitor compares against."""
    CHALLENGER = "challenger"
    """A candidate serving scores in the shadow of the champion (policy `shadow`)."""


class DriftKind(StrEnum):
    FEATURE = "feature"
    """The inputs' distribution moved away from the champion's reference."""
    PREDICTION = "prediction"
    """The champion's predictions (class, score) moved away from those on its validation set."""
    CONCEPT = "concept"
    """The champion's live accuracy fell (joined predictions and late labels)."""
    ESTIMATED_PERFORMANCE = "estimated-performance"
    """The champion's accuracy estimated from its own confidence (no labels needed) fell: the
    inputs moved to where it is less sure. Blind to a concept change (that is `concept`'s)."""


DistributionKind = Literal[DriftKind.FEATURE, DriftKind.PREDICTION]
"""The drift kinds judged on windows of a distribution (not on the error stream)."""

WindowedKind = Literal[DriftKind.FEATURE, DriftKind.PREDICTION, DriftKind.ESTIMATED_PERFORMANCE]
"""The drift kinds judged per closed window (an alarm needs `monitor_consecutive` in a row)."""


class TriggerKind(StrEnum):
    """Why a training run started."""

    COLD_START = "cold_start"
    DRIFT = "drift"
    MANUAL = "manual"
    SCHEDULE = "schedule"
    NEW_EXAMPLES = "new_examples"
    REFRESH = "refresh"
    """The same episode retrained on more of its data (after a drift's first candidate, or
    after the first model): see `TrainerSettings.trainer_refresh_factor`."""


Severity = Literal["warning", "critical"]
