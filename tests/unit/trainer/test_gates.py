"""The gates (`services.trainer.gates`) on purpose-built bad models."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from services.trainer.gates import examine, reload_and_score, run_gates
from services.trainer.pipeline import build_pipeline
from shared.features import encode_features
from shared.registry_api import GateReport
from shared.serialization import dump_model
from tests.fixtures import credit_examples, credit_schema


class _Extreme(ClassifierMixin, BaseEstimator):
    """Purpose-built bad model: NaN probabilities on extreme inputs, optionally slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Extreme:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        proba = np.tile([0.5, 0.5], (len(x), 1))
        proba[np.abs(x).max(axis=1) > 1e6] = np.nan
        return proba

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), dtype=int)


def _gate_report(model: object, x: np.ndarray, y: np.ndarray) -> GateReport:
    """The gates as a run judges them, for a model fitted here (what the fit process does)."""
    schema = credit_schema()
    evidence = examine(schema, model, x, convergence_warnings=[])  # type: ignore[arg-type]
    reloaded = reload_and_score(schema, *dump_model(model), x)
    return run_gates(evidence, y, reloaded, min_accuracy=0.0, champion=None, champion_tolerance=0.0)


def _gates(model_estimator: object) -> dict[str, bool]:
    schema, data = credit_schema(), credit_examples(300)
    x = encode_features(schema, [e.features for e in data])
    y = np.array([schema.label.classes.index(e.label) for e in data])
    model = build_pipeline(schema, model_estimator).fit(x, y)  # type: ignore[arg-type]
    return {g.name: g.passed for g in _gate_report(model, x, y).gates}


def test_gates_finite_outputs_and_round_trip_fail_on_a_bad_model() -> None:
    gates = _gates(_Extreme())
    assert gates["finite_outputs"] is False  # NaN on the extreme edge inputs
    assert gates["round_trip"] is False  # its type is not on ctloop's allow-list: never servable
    assert gates["latency_ms_per_row"] is True


def test_gate_latency_fails_on_a_slow_model() -> None:
    assert _gates(_Extreme(delay_s=0.04))["latency_ms_per_row"] is False


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gate_iteration_cap_without_a_warning() -> None:
    from sklearn.linear_model import LogisticRegression

    schema, data = credit_schema(), credit_examples(300)
    x = encode_features(schema, [e.features for e in data])
    y = np.array([schema.label.classes.index(e.label) for e in data])
    model = build_pipeline(schema, LogisticRegression(max_iter=2)).fit(x, y)
    report = _gate_report(model, x, y)  # warnings swallowed
    converged = next(g for g in report.gates if g.name == "converged")
    assert converged.passed is False and converged.value == 2 and converged.threshold == 2
