"""One training run: materialize the dataset, fit, gate, and upload a passing candidate.

A run that fails a gate is reported with that gate and never uploaded. Phases are timed so
the run report says where the time went.
"""

from __future__ import annotations

import time
import uuid
import warnings
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from services.trainer.dataset import materialize
from services.trainer.gates import run_gates
from services.trainer.pipeline import build_pipeline, make_estimator
from shared.events import DriftDetected, Envelope, Example, TriggerKind
from shared.features import encode_features
from shared.registry_api import (
    DatasetManifest,
    GateReport,
    Lineage,
    ReferenceProfile,
    VersionMetadata,
)
from shared.registry_client import RegistryClient
from shared.schema import DatasetSchema
from shared.settings import TrainerSettings

REFERENCE_SAMPLE = 1000


class Trigger(BaseModel):
    kind: TriggerKind
    event_id: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    """Train only on examples from this time on (a drift's onset)."""
    refined_since: datetime | None = None
    """The onset as the trainer placed it from the champion's errors (see `refine_onset`)."""
    reference_version: int | None = None
    """For a drift: the champion version it was about."""
    merged: list[str] = []
    """Ids of further triggers that arrived while this one waited or ran."""

    @classmethod
    def for_drift(cls, event: Envelope, drift: DriftDetected) -> Trigger:
        """The trigger a drift event makes: train on data from its onset on."""
        return cls(
            kind="drift",
            event_id=event.event_id,
            correlation_id=event.correlation_id,
            since=drift.onset_time,
            reference_version=drift.reference_version,
        )


class RunReport(BaseModel):
    run_id: str = Field(default_factory=lambda: f"run-{uuid.uuid4().hex[:12]}")
    trigger: Trigger
    status: Literal["pending", "running", "completed", "failed"] = "pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows: int = 0
    phases_ms: dict[str, float] = {}
    metrics: dict[str, float] = {}
    gate_report: GateReport | None = None
    failed_gate: str | None = None
    reason: str | None = None
    version: int | None = None
    dataset: DatasetManifest | None = None


def _reference(
    schema: DatasetSchema,
    examples: list[Example],
    accuracy: float,
    model: Pipeline,
    holdout_proba: np.ndarray,
) -> ReferenceProfile:
    # NOTE: `examples` is every row the model was built from (training and holdout): every
    # window is tested against this one sample, so a small, unlucky one makes all of them look
    # drifted (seen in the soak test: a cold start's 669 training rows raised a false alarm).
    step = max(1, len(examples) // REFERENCE_SAMPLE)
    sample = examples[::step][:REFERENCE_SAMPLE]
    labels = [str(e.label) for e in examples]
    # NOTE: the model's outputs on rows it never saw: on its own training rows it is more
    # confident than on live traffic, and the score test would call that difference drift
    # (it did, in the demo, within a few windows of the first model).
    proba = holdout_proba[:REFERENCE_SAMPLE]
    classes = [schema.label.classes[int(model.classes_[i])] for i in proba.argmax(axis=1)]
    return ReferenceProfile(
        sample={f: [e.features.get(f) for e in sample] for f in schema.feature_names},
        validation_accuracy=accuracy,
        class_frequencies={c: labels.count(c) / len(labels) for c in schema.class_keys},
        predictions={"prediction": [str(c) for c in classes], "score": proba.max(axis=1).tolist()},
    )


def execute(
    report: RunReport,
    examples: list[Example],
    schema: DatasetSchema,
    settings: TrainerSettings,
    registry: RegistryClient,
    champion: Pipeline | None,
    offsets: dict[str, list[int]] | None = None,
) -> RunReport:
    """Run the phases; fills `report` in place and returns it."""
    report.status, report.started_at = "running", datetime.now(UTC)
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.phases_ms[name] = round((now - clock) * 1000, 2)
        clock = now

    report.rows = len(examples)
    holdout_rows = max(1, int(len(examples) * settings.trainer_holdout_fraction))
    x = encode_features(schema, [e.features for e in examples])
    codes = {c: i for i, c in enumerate(schema.label.classes)}
    y = np.array([codes[e.label] for e in examples])
    x_train, x_holdout = x[:-holdout_rows], x[-holdout_rows:]
    y_train, y_holdout = y[:-holdout_rows], y[-holdout_rows:]
    report.dataset = materialize(
        schema, examples, x, settings.data_dir / "trainer" / "datasets", holdout_rows, offsets or {}
    )
    phase("prepare")

    if np.unique(y_train).size < 2:
        return _fail(report, "enough_classes", "the training set has a single class")
    model = build_pipeline(
        schema, make_estimator(settings.trainer_estimator, settings.trainer_estimator_params)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    convergence = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    phase("fit")

    gated = run_gates(
        schema,
        model,
        x_holdout,
        y_holdout,
        min_accuracy=settings.trainer_min_accuracy,
        champion=champion,
        champion_tolerance=settings.trainer_champion_tolerance,
        convergence_warnings=convergence,
    )
    gate_report = report.gate_report = gated.report
    accuracy = next(g.value for g in gate_report.gates if g.name == "min_accuracy") or 0.0
    report.metrics = {
        "accuracy": accuracy,
        "train_rows": float(len(examples) - holdout_rows),
        "holdout_rows": float(holdout_rows),
    }
    phase("gates")
    if not gate_report.passed:
        failed = next(g for g in gate_report.gates if not g.passed)
        return _fail(
            report, failed.name, f"{failed.name}: value {failed.value} vs {failed.threshold} {failed.detail}"
        )

    metadata = VersionMetadata(
        digest=gated.digest,
        input_schema=schema,
        metrics=report.metrics,
        gate_report=gate_report,
        dataset=report.dataset,
        reference_profile=_reference(schema, examples, accuracy, model, gated.holdout_proba),
        estimator=settings.trainer_estimator,
        package_versions={p: package_version(p) for p in ("scikit-learn", "numpy", "scipy", "skops")},
        lineage=Lineage(
            run_id=report.run_id,
            trigger=report.trigger.kind,
            trigger_event_id=report.trigger.event_id,
            correlation_id=report.trigger.correlation_id,
        ),
    )
    created = registry.upload(schema.name, gated.artifact, metadata)
    report.version = created.version
    phase("upload")
    report.status, report.finished_at = "completed", datetime.now(UTC)
    return report


def _fail(report: RunReport, gate: str, reason: str) -> RunReport:
    report.status, report.failed_gate, report.reason = "failed", gate, reason
    report.finished_at = datetime.now(UTC)
    return report
