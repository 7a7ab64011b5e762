"""The predictions-labels join in every order: out-of-order, duplicate and missing labels,
records that arrive labelled, and the challenger's shadow predictions."""

from __future__ import annotations

from datetime import UTC, datetime

from services.monitor.join import step
from shared.events import Prediction
from shared.validation import Label, Record

T = datetime(2026, 11, 21, 12, tzinfo=UTC)
FEATURES = {"x1": 1.0}


def prediction(value: int = 1, version: int = 3, shadow: bool = False) -> Prediction:
    return Prediction(
        prediction_id="p",
        record_id="r",
        model_name="demo",
        model_version=version,
        features=FEATURES,
        prediction=value,
        probabilities={"0": 0.0, "1": 1.0},
        event_time=T,
        shadow=shadow,
    )


def label(value: int = 1) -> Label:
    return Label(id="r", label=value, event_time=T)


def run(*events: object) -> list:
    entry, steps = None, []
    for event in events:
        result = step(entry, event, "r")  # type: ignore[arg-type]
        steps.append(result)
        entry = result.entry
    return steps


def test_prediction_then_label() -> None:
    first, second = run(prediction(1), label(1))
    assert first.example is None and first.features == (FEATURES, T)
    assert second.example is not None and second.example.prediction == 1 and second.example.model_version == 3
    assert second.outcome == (3, True, T) and second.entry is None and second.features is None


def test_label_before_prediction_joins_the_same() -> None:
    first, second = run(label(0), prediction(1))
    assert first.example is None and first.entry == {"l": 0}
    assert second.example is not None and second.outcome == (3, False, T)


def test_duplicates_give_one_example() -> None:
    steps = run(prediction(1), prediction(1), label(1), label(1))
    assert [s.example is not None for s in steps] == [False, False, True, False]
    assert steps[-1].entry == {"l": 1}  # the late duplicate waits alone and expires


def test_missing_label_keeps_waiting() -> None:
    (only,) = run(prediction(1))
    assert only.example is None and only.entry is not None and only.entry["p"] == 1


def test_a_labelled_record_completes_at_once_and_completes_a_waiting_prediction() -> None:
    (alone,) = run(Record(id="r", event_time=T, features=FEATURES, label=0))
    assert alone.example is not None and alone.example.label == 0 and alone.outcome is None
    _, joined = run(prediction(0), Record(id="r", event_time=T, features=FEATURES, label=0))
    assert joined.example is not None and joined.outcome == (3, True, T)


def test_shadow_predictions_pair_with_the_champion() -> None:
    steps = run(prediction(1, version=4, shadow=True), label(1), prediction(0))
    assert [s.example is not None for s in steps] == [False, False, True]
    assert steps[-1].outcome == (3, False, T) and steps[-1].shadow == (4, True)
    assert steps[0].features is None  # shadow features are not tested twice
    shadow_only = run(prediction(1, version=4, shadow=True), label(1))
    assert all(s.example is None for s in shadow_only)  # no champion prediction, no features: no example
