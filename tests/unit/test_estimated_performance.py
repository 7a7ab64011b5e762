"""Estimated performance (CBPE): accuracy from calibrated confidence, and the monitor's alarm
when it falls, on seeded synthetic champions whose true accuracy is known."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np

from services.monitor.estimated import ConfidenceCalibration
from services.monitor.state import MonitorState
from shared.events import DriftDetected
from shared.settings import MonitorSettings
from shared.vocabulary import DriftKind
from tests.fixtures import demo_rows, demo_schema, model_version

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def holdout(n: int, seed: int, confidence: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform in [0.5, 1] and outcomes right with chance `confidence` x score (an
    overconfident model when < 1)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.5, 1.0, n)
    return scores, (rng.random(n) < confidence * scores).astype(float)


def test_on_its_own_holdout_the_estimate_is_the_holdout_accuracy() -> None:
    scores, correct = holdout(1000, seed=1)
    calibration = ConfidenceCalibration(scores, correct)
    assert abs(calibration.reference - correct.mean()) < 1e-9
    assert np.all(np.diff(calibration.chance(np.linspace(0, 1, 50))) >= 0)  # never less sure, more right


def test_an_overconfident_model_is_estimated_by_what_it_got_right_not_by_what_it_said() -> None:
    scores, correct = holdout(2000, seed=2, confidence=0.8)  # right 80% as often as it claims
    calibration = ConfidenceCalibration(scores, correct)
    live = np.random.default_rng(3).uniform(0.5, 1.0, 500)
    estimated = calibration.estimate(live)
    assert abs(estimated.estimate - 0.8 * 0.75) < 0.03  # not the 0.75 its scores say
    assert estimated.interval[0] < 0.6 < estimated.interval[1]


def _state(seed: int = 4) -> MonitorState:
    schema = demo_schema()
    reference = demo_rows(500, seed=seed)
    scores, correct = holdout(1000, seed=seed)
    predictions: dict[str, list[object]] = {
        "prediction": [random.Random(seed + i).choice(["0", "1"]) for i in range(1000)],
        "score": scores.tolist(),
        "correct": correct.tolist(),
    }
    sample: dict[str, list[object]] = {f: [r[f] for r in reference] for f in schema.feature_names}
    s = MonitorState(MonitorSettings(monitor_window=250, monitor_cooldown_s=0), schema)
    s.set_reference(model_version(schema, sample, accuracy=float(correct.mean()), predictions=predictions))
    return s


def _predict(s: MonitorState, scores: np.ndarray, start: int) -> list[tuple[int, DriftDetected]]:
    alarms = []
    rng = random.Random(start)
    for i, score in enumerate(scores):
        drift = s.observe_prediction(rng.choice(["0", "1"]), float(score), T0 + timedelta(seconds=start + i))
        if drift is not None:
            alarms.append((start + i, drift))
    return alarms


def test_quiet_while_the_confidence_holds() -> None:
    for seed in range(5):
        s = _state(seed)
        live = np.random.default_rng(seed + 100).uniform(0.5, 1.0, 10_000)  # 40 windows
        assert not [a for a in _predict(s, live, 0) if a[1].kind == DriftKind.ESTIMATED_PERFORMANCE]


def test_falling_confidence_raises_one_alarm_before_any_label() -> None:
    s = _state()
    rng = np.random.default_rng(5)
    before = rng.uniform(0.5, 1.0, 1000)
    after = rng.uniform(0.5, 0.75, 1000)  # inputs where it is less sure: ~0.625 right, not 0.75
    alarms = _predict(s, np.concatenate([before, after]), 0)
    estimated = [(i, a) for i, a in alarms if a.kind == DriftKind.ESTIMATED_PERFORMANCE]
    assert [i for i, _ in estimated] == [1499]  # the second falling window of 250 in a row
    drift = estimated[0][1]
    assert drift.onset_time == T0 + timedelta(seconds=1000)  # the first falling window's start
    assert drift.estimated_interval is not None and drift.estimated_accuracy is not None
    assert drift.estimated_interval[0] < 0.625 < drift.estimated_interval[1]
    assert drift.baseline_accuracy is not None and drift.baseline_accuracy - drift.estimated_accuracy > 0.08
    reports = s.status()["reports"]
    assert isinstance(reports, list)
    estimates = [r["estimated_accuracy"] for r in reports if "estimated_accuracy" in r]
    assert estimates and estimates[-1] < 0.7
    assert any(r.get("drift_kind") == DriftKind.ESTIMATED_PERFORMANCE for r in reports)


def test_a_score_that_is_no_number_is_left_out_of_the_estimate() -> None:
    s = _state()
    scores = np.random.default_rng(8).uniform(0.5, 1.0, 250)
    scores[::10] = np.nan  # a predictions event may carry NaN (JSON parsers accept it)
    _predict(s, scores, 0)
    reports = s.status()["reports"]
    assert isinstance(reports, list)
    (estimate,) = [r["estimated_accuracy"] for r in reports if "estimated_accuracy" in r]
    assert 0.6 < estimate < 0.9


def test_rising_confidence_is_no_loss() -> None:
    s = _state()
    rng = np.random.default_rng(6)
    scores = np.concatenate([rng.uniform(0.5, 1.0, 1000), rng.uniform(0.9, 1.0, 2000)])
    assert all(a.kind != DriftKind.ESTIMATED_PERFORMANCE for _, a in _predict(s, scores, 0))


def test_a_reference_without_holdout_outcomes_gives_no_estimate() -> None:
    schema = demo_schema()
    scores, _ = holdout(1000, seed=7)
    predictions: dict[str, list[object]] = {"prediction": ["0"] * 1000, "score": scores.tolist()}
    version = model_version(schema, {f: [] for f in schema.feature_names}, predictions=predictions)
    assert ConfidenceCalibration.of(version.reference_profile) is None
