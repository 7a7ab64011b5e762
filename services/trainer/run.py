"""One training run: materialize the dataset, fit, gate, and upload a passing candidate.

The fit happens in the fit process (`services.trainer.fitting`); this process writes the
dataset version and scores the champion meanwhile, then loads the artifact for the round
trip. A run that fails a gate is reported with that gate and never uploaded. Phases are
timed so the run report says where the time went.

A drift's run may also be handed models of earlier episodes (a concept that recurs). None of
them saw any of the run's (post-onset) examples, so each is scored on all of them, a closer
estimate than the fresh fit's on its holdout alone; the best replaces the fresh fit as the
candidate when it scores at least as well, and goes through the same gates. A drift answered
at its alarm by such a model runs `execute_recall`: no fit, the same gates and upload.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version as package_version
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.pipeline import Pipeline

from services.trainer.dataset import materialize, prune_datasets
from services.trainer.examples import TrainingSet
from services.trainer.fitting import FitProcess, fit_job
from services.trainer.gates import (
    ChampionScore,
    Evidence,
    examine,
    holdout_accuracy,
    reload_and_score,
    run_gates,
    score_champion,
)
from shared.events import DriftDetected, Envelope, Example
from shared.gc_tuning import cyclic_gc_resumed
from shared.registry_api import (
    DatasetManifest,
    GateReport,
    Lineage,
    ModelVersion,
    ReferenceProfile,
    VersionMetadata,
)
from shared.registry_client import ModelVersions
from shared.schema import DatasetSchema
from shared.settings import TrainerSettings
from shared.vocabulary import TriggerKind

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
    min_rows: int | None = None
    """Examples it may use (since `since`, or all) needed before it runs; None: the settings'
    minimum for its kind. A refresh waits for its episode's next size."""
    recall_tried: bool = False
    """A drift's recall at the alarm (`trainer_recall_at_alarm`) was tried and found no
    earlier model to bring back: it waits for its first fit."""

    @classmethod
    def for_drift(cls, event: Envelope, drift: DriftDetected) -> Trigger:
        """The trigger a drift event makes: train on data from its onset on."""
        return cls(
            kind=TriggerKind.DRIFT,
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
    """Wall-clock phases, one after another: prepare, fit, gates, upload."""
    beside_fit_ms: dict[str, float] = {}
    """Work done during the fit phase: here, the dataset version with the reference profile's
    data and the champion's score; in the fit process, the fit and the dump."""
    metrics: dict[str, float] = {}
    gate_report: GateReport | None = None
    failed_gate: str | None = None
    reason: str | None = None
    version: int | None = None
    aliases: list[str] = []
    """The aliases the registry gave the version on upload (by its promotion policy)."""
    dataset: DatasetManifest | None = None
    recalled_from: int | None = None
    """The earlier version registered again instead of the fresh fit (it scored higher)."""
    estimators: dict[str, float] = {}
    """When a small training set chose between two estimators (`trainer_small_sample_estimator`):
    each one's cross-validated accuracy on the training rows, by import path. The version's
    `estimator` names the one kept."""


@dataclass(frozen=True)
class Earlier:
    """A model of an earlier episode, loaded, that a drift's candidate competes with."""

    version: ModelVersion
    model: Pipeline
    artifact: bytes


@dataclass(frozen=True)
class _DataProfile:
    """The part of the reference profile that needs no model (made beside the fit)."""

    sample: dict[str, list[object]]
    class_frequencies: dict[str, float]

    @classmethod
    def of(cls, schema: DatasetSchema, examples: list[Example]) -> _DataProfile:
        # NOTE: `examples` is every row the model was built from (training and holdout): every
        # window is tested against this one sample, so a small, unlucky one makes all of them
        # look drifted (seen in the soak test: a cold start's 669 training rows raised a false
        # alarm).
        step = max(1, len(examples) // REFERENCE_SAMPLE)
        sample = examples[::step][:REFERENCE_SAMPLE]
        counts = Counter(str(e.label) for e in examples)
        return cls(
            sample={f: [e.features.get(f) for e in sample] for f in schema.feature_names},
            class_frequencies={c: counts[c] / len(examples) for c in schema.class_keys},
        )


def _reference(
    schema: DatasetSchema, data: _DataProfile, accuracy: float, evidence: Evidence, y_holdout: np.ndarray
) -> ReferenceProfile:
    # NOTE: the model's outputs on rows it never saw: on its own training rows it is more
    # confident than on live traffic, and the score test would call that difference drift
    # (it did, in the demo, within a few windows of the first model).
    proba = evidence.holdout_proba[:REFERENCE_SAMPLE]
    predicted = evidence.classes[proba.argmax(axis=1)]
    classes = [schema.label.classes[int(p)] for p in predicted]
    correct = (predicted == y_holdout[: len(proba)]).astype(int)
    return ReferenceProfile(
        sample=data.sample,
        validation_accuracy=accuracy,
        class_frequencies=data.class_frequencies,
        predictions={
            "prediction": [str(c) for c in classes],
            "score": proba.max(axis=1).tolist(),
            "correct": correct.tolist(),
        },
    )


@cache
def _package_versions() -> dict[str, str]:
    return {p: package_version(p) for p in ("scikit-learn", "numpy", "scipy", "skops")}


def execute(
    report: RunReport,
    data: TrainingSet,
    schema: DatasetSchema,
    settings: TrainerSettings,
    registry: ModelVersions,
    champion: Callable[[], Pipeline | None],
    fitter: FitProcess,
    offsets: Callable[[], dict[str, list[int]]] | None = None,
    earlier: Callable[[], list[Earlier]] | None = None,
) -> RunReport:
    """Run the phases; fills `report` in place and returns it. `champion` gives the model to
    beat (loaded, if need be, beside the fit); `offsets` the examples' source offset ranges
    for the manifest; `earlier` the models of earlier episodes the fresh fit competes with.

    The phases are the trainer's wall clock, one after another: `prepare` (split off the
    holdout, hand the job to the fit process), `fit` (until the model is serialized; the dataset version is
    written and the champion scored meanwhile, in `report.beside_fit_ms`), `gates` (load
    the artifact as serving would, compare, judge) and `upload`.
    """
    report.status, report.started_at = "running", datetime.now(UTC)
    phase = _PhaseClock(report)

    def beside(name: str, since: float) -> None:
        report.beside_fit_ms[name] = round((time.perf_counter() - since) * 1000, 2)

    examples, x, y = data.examples, data.x, data.y
    report.rows = len(examples)
    holdout_rows = max(1, int(len(examples) * settings.trainer_holdout_fraction))
    x_train, x_holdout = x[:-holdout_rows], x[-holdout_rows:]
    y_train, y_holdout = y[:-holdout_rows], y[-holdout_rows:]
    if np.unique(y_train).size < 2:
        phase("prepare")
        return _fail(report, "enough_classes", "the training set has a single class")
    with fitter.run(fit_job(settings, schema, x_train, y_train, x_holdout)) as fit:
        phase("prepare")
        started = time.perf_counter()
        folder = settings.data_dir / "trainer" / "datasets"
        report.dataset = materialize(schema, examples, x, folder, holdout_rows, offsets() if offsets else {})
        prune_datasets(folder, settings.trainer_datasets_kept)
        data_profile = _DataProfile.of(schema, examples)
        beside("dataset", started)
        started = time.perf_counter()
        champion_model, champion_score = champion(), None
        if champion_model is not None:
            champion_score = score_champion(champion_model, x_holdout, y_holdout)
        beside("champion", started)
        started = time.perf_counter()
        recalled = best_earlier(earlier() if earlier else [], x, y)
        if earlier is not None:
            beside("earlier", started)
        with cyclic_gc_resumed():
            serialized = fit.serialized()
        report.beside_fit_ms["fit_process_fit"] = round(serialized.fit_ms, 2)
        report.beside_fit_ms["fit_process_dump"] = round(serialized.dump_ms, 2)
        phase("fit")

        # The child examines the model while this process loads its artifact, and the
        # registry verifies it (it is sent now, registered only if the gates pass).
        if serialized.error is None:
            registry.stage(serialized.artifact)
        reloaded = serialized.error or reload_and_score(
            schema, serialized.artifact, serialized.digest, x_holdout
        )
        evidence = fit.evidence()
    artifact, digest, estimator = serialized.artifact, serialized.digest, serialized.estimator
    report.estimators = serialized.cross_validated
    if recalled is not None and recalled[1] >= holdout_accuracy(evidence, y_holdout):
        # A concept seen before: its model, trained on a whole episode, knows it at least as
        # well as a fit on the few examples since the onset (on a tie, it learned from more).
        was = recalled[0]
        evidence = examine(schema, was.model, x_holdout, [])
        reloaded = reload_and_score(schema, was.artifact, was.version.digest, x_holdout)
        artifact, digest, estimator = was.artifact, was.version.digest, was.version.estimator
        report.recalled_from = was.version.version
    return _judge_and_upload(
        report,
        _Judged(artifact, digest, estimator, evidence, reloaded, y_holdout, champion_score),
        schema,
        settings,
        registry,
        phase,
        train_rows=len(examples) - holdout_rows,
        reference=lambda accuracy: _reference(schema, data_profile, accuracy, evidence, y_holdout),
    )


def execute_recall(
    report: RunReport,
    data: TrainingSet,
    schema: DatasetSchema,
    settings: TrainerSettings,
    registry: ModelVersions,
    champion: Callable[[], Pipeline | None],
    recalled: Earlier,
    offsets: Callable[[], dict[str, list[int]]] | None = None,
) -> RunReport:
    """A drift's run without a fit: `recalled`, an earlier episode's model, goes through the
    gates on all of `data` (the few examples since the onset, none of which it saw) and is
    registered again. It keeps its own reference profile: the concept it learned is back, and
    a profile of a few dozen rows would make every window look drifted to the monitor."""
    report.status, report.started_at = "running", datetime.now(UTC)
    phase = _PhaseClock(report)
    examples, x, y = data.examples, data.x, data.y
    report.rows = len(examples)
    folder = settings.data_dir / "trainer" / "datasets"
    report.dataset = materialize(schema, examples, x, folder, len(examples), offsets() if offsets else {})
    prune_datasets(folder, settings.trainer_datasets_kept)
    champion_model = champion()
    champion_score = score_champion(champion_model, x, y) if champion_model is not None else None
    phase("prepare")
    evidence = examine(schema, recalled.model, x, [])
    reloaded = reload_and_score(schema, recalled.artifact, recalled.version.digest, x)
    report.recalled_from = recalled.version.version
    was = recalled.version
    return _judge_and_upload(
        report,
        _Judged(recalled.artifact, was.digest, was.estimator, evidence, reloaded, y, champion_score),
        schema,
        settings,
        registry,
        phase,
        train_rows=0,
        reference=lambda accuracy: (  # a version registered without a profile: these examples'
            was.reference_profile
            or _reference(schema, _DataProfile.of(schema, examples), accuracy, evidence, y)
        ),
    )


class _PhaseClock:
    """Times a run's phases, one after another, into `report.phases_ms`."""

    def __init__(self, report: RunReport) -> None:
        self.report, self.clock = report, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.report.phases_ms[name] = round((now - self.clock) * 1000, 2)
        self.clock = now


@dataclass(frozen=True)
class _Judged:
    """A candidate as the gates see it."""

    artifact: bytes
    digest: str
    estimator: str
    evidence: Evidence
    reloaded: np.ndarray | str
    y_holdout: np.ndarray
    champion: ChampionScore | None


def _judge_and_upload(
    report: RunReport,
    candidate: _Judged,
    schema: DatasetSchema,
    settings: TrainerSettings,
    registry: ModelVersions,
    phase: _PhaseClock,
    train_rows: int,
    reference: Callable[[float], ReferenceProfile],
) -> RunReport:
    """The gates, then the upload of a candidate that passed them."""
    gate_report = report.gate_report = run_gates(
        candidate.evidence,
        candidate.y_holdout,
        candidate.reloaded,
        min_accuracy=settings.trainer_min_accuracy,
        champion=candidate.champion,
        # A refresh replaces a model of its own episode: it goes out only if it is at least
        # as good on the newest data, or refreshes would trade accuracy for data volume.
        champion_tolerance=0.0
        if report.trigger.kind == TriggerKind.REFRESH
        else settings.trainer_champion_tolerance,
    )
    accuracy = next(g.value for g in gate_report.gates if g.name == "min_accuracy") or 0.0
    report.metrics = {
        "accuracy": accuracy,
        "train_rows": float(train_rows),
        "holdout_rows": float(len(candidate.y_holdout)),
    }
    phase("gates")
    if not gate_report.passed:
        failed = next(g for g in gate_report.gates if not g.passed)
        return _fail(
            report, failed.name, f"{failed.name}: value {failed.value} vs {failed.threshold} {failed.detail}"
        )

    metadata = VersionMetadata(
        digest=candidate.digest,
        input_schema=schema,
        metrics=report.metrics,
        gate_report=gate_report,
        dataset=report.dataset,
        reference_profile=reference(accuracy),
        estimator=candidate.estimator,
        package_versions=_package_versions(),
        lineage=Lineage(
            run_id=report.run_id,
            trigger=report.trigger.kind,
            trigger_event_id=report.trigger.event_id,
            correlation_id=report.trigger.correlation_id,
            recalled_from=report.recalled_from,
        ),
    )
    created = registry.upload(schema.name, candidate.artifact, metadata)
    report.version, report.aliases = created.version, list(created.aliases)
    phase("upload")
    report.status, report.finished_at = "completed", datetime.now(UTC)
    return report


def best_earlier(earlier: list[Earlier], x: np.ndarray, y: np.ndarray) -> tuple[Earlier, float] | None:
    """The earlier model with the highest accuracy on `x`, `y` (the newest on a tie), or None
    when there is none or none can score them."""
    best: tuple[Earlier, float] | None = None
    for candidate in sorted(earlier, key=lambda e: -e.version.version):
        score = score_champion(candidate.model, x, y).accuracy
        if score == score and (best is None or score > best[1]):  # NaN: it cannot score this data
            best = (candidate, score)
    return best


def _fail(report: RunReport, gate: str, reason: str) -> RunReport:
    report.status, report.failed_gate, report.reason = "failed", gate, reason
    report.finished_at = datetime.now(UTC)
    return report
