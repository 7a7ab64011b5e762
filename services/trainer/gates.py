"""Validation gates a candidate must pass before it may be uploaded, each with its value.

These are the model's CI: holdout quality, comparison with the champion on the same holdout,
finite outputs on edge inputs, convergence, a latency budget, and a serialize-load round trip
that gives identical predictions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from shared.features import UNSEEN
from shared.registry_api import GateReport, GateResult
from shared.schema import DatasetSchema
from shared.serialization import dump_model, load_model

LATENCY_BUDGET_MS = 25.0
LATENCY_CALLS = 7
"""One-row calls timed for the latency gate (their median is the value)."""
ROUND_TRIP_ROWS = 2000
"""Holdout rows (spread over it) the reloaded model must score identically, with the edge inputs."""


@dataclass
class GateOutcome:
    report: GateReport
    artifact: bytes
    """The serialized model (empty when serialization failed)."""
    digest: str
    holdout_proba: np.ndarray
    """The candidate's probabilities on the holdout, for whoever needs them next."""


def edge_inputs(schema: DatasetSchema) -> np.ndarray:
    """Rows that stress a model: all missing, unseen categories, extreme numbers."""
    n = len(schema.features)
    missing = np.full(n, np.nan)
    unseen = np.array([UNSEEN if f.type == "categorical" else 0.0 for f in schema.features])
    huge = np.array([0.0 if f.type == "categorical" else 1e12 for f in schema.features])
    tiny = np.array([0.0 if f.type == "categorical" else -1e12 for f in schema.features])
    return np.vstack([missing, unseen, huge, tiny])


def run_gates(
    schema: DatasetSchema,
    model: Pipeline,
    x_holdout: np.ndarray,
    y_holdout: np.ndarray,
    *,
    min_accuracy: float,
    champion: Pipeline | None,
    champion_tolerance: float,
    convergence_warnings: list[str],
) -> GateOutcome:
    """Run every gate; returns the report, the serialized artifact with its digest, and the
    holdout's probabilities."""
    gates: list[GateResult] = []

    # The holdout's probabilities are computed once and reused by the gates below.
    holdout_proba = model.predict_proba(x_holdout)
    predicted = model.classes_[holdout_proba.argmax(axis=1)]
    accuracy = float(np.mean(predicted == y_holdout))
    gates.append(
        GateResult(
            name="min_accuracy", passed=accuracy >= min_accuracy, value=accuracy, threshold=min_accuracy
        )
    )

    if champion is not None:
        try:
            champion_accuracy = float(np.mean(champion.predict(x_holdout) == y_holdout))
            passed = accuracy >= champion_accuracy - champion_tolerance
            detail = f"champion {champion_accuracy:.4f} on the same holdout"
        except Exception as exc:  # the champion cannot score this data: nothing to beat
            champion_accuracy, passed, detail = math.nan, True, f"champion could not score: {exc}"
        gates.append(
            GateResult(
                name="beats_champion",
                passed=passed,
                value=accuracy,
                threshold=champion_accuracy - champion_tolerance,
                detail=detail,
            )
        )

    gates.append(_converged(model, convergence_warnings))

    edges = edge_inputs(schema)
    edge_proba = model.predict_proba(edges)
    proba = np.vstack([holdout_proba, edge_proba])
    gates.append(
        GateResult(
            name="finite_outputs",
            passed=bool(np.isfinite(proba).all()),
            detail="holdout and edge inputs (missing, unseen, extreme)",
        )
    )

    one_row = x_holdout[:1]
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        model.predict_proba(one_row)
        timings.append((time.perf_counter() - start) * 1000)
    latency = float(np.median(timings))
    gates.append(
        GateResult(
            name="latency_ms_per_row",
            passed=latency <= LATENCY_BUDGET_MS,
            value=latency,
            threshold=LATENCY_BUDGET_MS,
        )
    )

    # NOTE: a sample spread over the holdout, plus the edge inputs: skops rebuilds the fitted
    # arrays exactly or not at all, and scoring the whole holdout again cost 15% of a fit.
    rows = np.linspace(0, len(x_holdout) - 1, min(len(x_holdout), ROUND_TRIP_ROWS)).astype(int)
    artifact, artifact_digest = b"", ""
    try:
        artifact, artifact_digest = dump_model(model)
        reloaded = load_model(artifact, artifact_digest)
        again = reloaded.predict_proba(np.vstack([x_holdout[rows], edges]))  # type: ignore[attr-defined]
        same = bool(np.array_equal(again, np.vstack([holdout_proba[rows], edge_proba]), equal_nan=True))
        detail = (
            f"serialize, load, same probabilities on {len(rows)} holdout rows and the edge inputs"
            if same
            else "predictions differ after loading"
        )
    except Exception as exc:  # e.g. a type outside the allow-list: it could never be served
        same, detail = False, f"{type(exc).__name__}: {exc}"[:300]
    gates.append(GateResult(name="round_trip", passed=same, detail=detail))

    report = GateReport(passed=all(g.passed for g in gates), gates=gates)
    return GateOutcome(report, artifact, artifact_digest, holdout_proba)


# Estimators whose max_iter caps an optimizer (reaching it means "stopped, not converged");
# for boosting, max_iter is the number of trees and reaching it is normal.
ITERATIVE_SOLVERS = ("sklearn.linear_model", "sklearn.neural_network", "sklearn.svm")


def _converged(model: Pipeline, warnings_seen: list[str]) -> GateResult:
    estimator = model.steps[-1][1]
    iterations = getattr(estimator, "n_iter_", None)
    cap = getattr(estimator, "max_iter", None)
    capped = False
    if (
        iterations is not None
        and cap not in (None, -1)
        and type(estimator).__module__.startswith(ITERATIVE_SOLVERS)
    ):
        capped = int(np.max(iterations)) >= int(cap)
    detail = "; ".join(warnings_seen)[:300] or (
        f"{int(np.max(iterations))} of {cap} iterations" if capped else ""
    )
    return GateResult(
        name="converged",
        passed=not warnings_seen and not capped,
        value=float(np.max(iterations)) if iterations is not None else None,
        threshold=float(cap) if isinstance(cap, int | float) else None,
        detail=detail,
    )
