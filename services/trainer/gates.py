"""Validation gates a candidate must pass before it may be uploaded, each with its value.

These are the model's CI: holdout quality, comparison with the champion on the same holdout,
finite outputs on edge inputs, convergence, a latency budget, and a serialize-load round trip
that gives identical predictions.

What needs the fitted model itself is measured by `examine`, in the fit process where the
model lives (`services.trainer.fitting`); the round trip loads the artifact in the trainer's
own process, as serving will; `run_gates` turns those measurements into the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from shared.compiled_preparation import Predictor
from shared.features import UNSEEN
from shared.registry_api import GateReport, GateResult
from shared.schema import DatasetSchema
from shared.serialization import load_model

LATENCY_BUDGET_MS = 25.0
LATENCY_CALLS = 7
"""One-row calls timed for the latency gate (the fastest is the value).

NOTE: the median was the value until the loop test, with refreshes fitting beside a monitor and
serving at 300 records/s on 2 cores, measured 27-31 ms for a HistGradientBoosting model whose
one-row predict takes 7 ms on an idle core, and refused it: the scheduler's wait, not the
model's cost. The fastest call is what the row costs (as in serving's swap check)."""
ROUND_TRIP_ROWS = 500
"""Holdout rows (spread over it) the reloaded model must score identically, with the edge
inputs. skops rebuilds the fitted arrays exactly or not at all, so a sample tells as much as
the whole holdout. The trainer loads and scores while the fit process examines the model and
the registry verifies the staged artifact, three processes on 2 cores. NOTE: 50,000 rows,
HistGradientBoosting: scoring 2,000 rows after the load took ~7 ms of the trainer's ~31; with
500 the gates phase went from 56 to 50 ms (median of 9)."""


@dataclass(frozen=True)
class Evidence:
    """What the gates need from the fitted model, measured where it was fitted."""

    classes: np.ndarray
    holdout_proba: np.ndarray
    """The candidate's probabilities on the holdout, reused by whoever needs them next."""
    edge_proba: np.ndarray
    latency_ms: float
    """Fastest of `LATENCY_CALLS` one-row predictions, the way serving predicts."""
    converged: GateResult


@dataclass(frozen=True)
class ChampionScore:
    accuracy: float
    """NaN when the champion could not score the holdout."""
    detail: str


def edge_inputs(schema: DatasetSchema) -> np.ndarray:
    """Rows that stress a model: all missing, unseen categories, extreme numbers."""
    n = len(schema.features)
    missing = np.full(n, np.nan)
    unseen = np.array([UNSEEN if f.type == "categorical" else 0.0 for f in schema.features])
    huge = np.array([0.0 if f.type == "categorical" else 1e12 for f in schema.features])
    tiny = np.array([0.0 if f.type == "categorical" else -1e12 for f in schema.features])
    return np.vstack([missing, unseen, huge, tiny])


def examine(
    schema: DatasetSchema, model: Pipeline, x_holdout: np.ndarray, convergence_warnings: list[str]
) -> Evidence:
    """Score the holdout and the edge inputs, time one-row predictions, check convergence."""
    # One call for both: each predict_proba costs ~2 ms before its first row.
    proba = model.predict_proba(np.vstack([x_holdout, edge_inputs(schema)]))
    holdout_proba, edge_proba = proba[: len(x_holdout)], proba[len(x_holdout) :]
    one_row = x_holdout[:1]
    predictor = Predictor.of(model)  # as serving predicts
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        predictor.predict_proba(one_row)
        timings.append((time.perf_counter() - start) * 1000)
    return Evidence(
        classes=np.asarray(model.classes_),
        holdout_proba=holdout_proba,
        edge_proba=edge_proba,
        latency_ms=min(timings),
        converged=_converged(model, convergence_warnings),
    )


def score_champion(champion: Pipeline, x_holdout: np.ndarray, y_holdout: np.ndarray) -> ChampionScore:
    """The champion's accuracy on the candidate's holdout (runs beside the fit)."""
    try:
        accuracy = float(np.mean(champion.predict(x_holdout) == y_holdout))
        return ChampionScore(accuracy, f"champion {accuracy:.4f} on the same holdout")
    except Exception as exc:  # the champion cannot score this data: nothing to beat
        return ChampionScore(math.nan, f"champion could not score: {exc}")


def round_trip_rows(holdout_rows: int) -> np.ndarray:
    """Indices of the holdout rows the round trip compares: `ROUND_TRIP_ROWS` spread over it."""
    return np.linspace(0, holdout_rows - 1, min(holdout_rows, ROUND_TRIP_ROWS)).astype(int)


def reload_and_score(
    schema: DatasetSchema, artifact: bytes, digest: str, x_holdout: np.ndarray
) -> np.ndarray | str:
    """Load the artifact as serving would and score the round trip's holdout rows and the edge
    inputs; the probabilities, or why it could not be loaded or could not score."""
    try:
        reloaded = load_model(artifact, digest)
        rows = x_holdout[round_trip_rows(len(x_holdout))]
        return reloaded.predict_proba(np.vstack([rows, edge_inputs(schema)]))  # type: ignore[attr-defined,no-any-return]
    except Exception as exc:  # e.g. a type outside the allow-list: it could never be served
        return f"{type(exc).__name__}: {exc}"[:300]


def _round_trip(reloaded: np.ndarray | str, evidence: Evidence) -> GateResult:
    if isinstance(reloaded, str):
        return GateResult(name="round_trip", passed=False, detail=reloaded)
    rows = round_trip_rows(len(evidence.holdout_proba))
    expected = np.vstack([evidence.holdout_proba[rows], evidence.edge_proba])
    same = bool(np.array_equal(reloaded, expected, equal_nan=True))
    detail = (
        f"serialize, load, same probabilities on {len(rows)} holdout rows and the edge inputs"
        if same
        else "predictions differ after loading"
    )
    return GateResult(name="round_trip", passed=same, detail=detail)


def holdout_accuracy(evidence: Evidence, y_holdout: np.ndarray) -> float:
    predicted = evidence.classes[evidence.holdout_proba.argmax(axis=1)]
    return float(np.mean(predicted == y_holdout))


def run_gates(
    evidence: Evidence,
    y_holdout: np.ndarray,
    reloaded: np.ndarray | str,
    *,
    min_accuracy: float,
    champion: ChampionScore | None,
    champion_tolerance: float,
) -> GateReport:
    """Every gate, in a fixed order, each with its measured value. `reloaded`: what
    `reload_and_score` gave (or why there was no artifact to load)."""
    accuracy = holdout_accuracy(evidence, y_holdout)
    gates = [
        GateResult(
            name="min_accuracy", passed=accuracy >= min_accuracy, value=accuracy, threshold=min_accuracy
        )
    ]
    if champion is not None:
        threshold = champion.accuracy - champion_tolerance
        gates.append(
            GateResult(
                name="beats_champion",
                passed=math.isnan(threshold) or accuracy >= threshold,
                value=accuracy,
                threshold=threshold,
                detail=champion.detail,
            )
        )
    gates.append(evidence.converged)
    proba = np.vstack([evidence.holdout_proba, evidence.edge_proba])
    gates.append(
        GateResult(
            name="finite_outputs",
            passed=bool(np.isfinite(proba).all()),
            detail="holdout and edge inputs (missing, unseen, extreme)",
        )
    )
    gates.append(
        GateResult(
            name="latency_ms_per_row",
            passed=evidence.latency_ms <= LATENCY_BUDGET_MS,
            value=evidence.latency_ms,
            threshold=LATENCY_BUDGET_MS,
        )
    )
    gates.append(_round_trip(reloaded, evidence))
    return GateReport(passed=all(g.passed for g in gates), gates=gates)


# Estimators whose max_iter caps an optimizer (reaching it means "stopped, not converged");
# for boosting, max_iter is the number of trees and reaching it is normal.
ITERATIVE_SOLVERS = ("sklearn.linear_model", "sklearn.neural_network", "sklearn.svm")


def _converged(model: Pipeline, warnings_seen: list[str]) -> GateResult:
    estimator = model.steps[-1][1]
    iterations = getattr(estimator, "n_iter_", None)
    cap = getattr(estimator, "max_iter", None)
    capped, most = False, 0
    if (
        iterations is not None
        and cap is not None
        and cap != -1
        and type(estimator).__module__.startswith(ITERATIVE_SOLVERS)
    ):
        most = int(np.max(iterations))
        capped = most >= int(cap)
    detail = "; ".join(warnings_seen)[:300] or (f"{most} of {cap} iterations" if capped else "")
    return GateResult(
        name="converged",
        passed=not warnings_seen and not capped,
        value=float(np.max(iterations)) if iterations is not None else None,
        threshold=float(cap) if isinstance(cap, int | float) else None,
        detail=detail,
    )
