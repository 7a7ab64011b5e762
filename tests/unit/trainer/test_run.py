"""A training run (`services.trainer.run.execute`): gates, lineage, dataset, reproducibility,
and a crash mid-upload that registers nothing."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from services.trainer.dataset import materialize, prune_datasets
from services.trainer.examples import TrainingSet
from services.trainer.fitting import FitProcess
from services.trainer.run import RunReport, Trigger, execute
from services.trainer.service import Trainer
from shared.features import encode_features
from shared.registry_api import DatasetManifest, ModelVersion, VersionMetadata
from shared.serialization import load_model
from tests.fixtures import credit_examples, credit_schema, tiny_pipeline
from tests.unit.trainer.helpers import FakePublisher, FakeRegistry, run, run_one, settings


def test_a_good_run_passes_every_gate_and_carries_its_lineage(tmp_path: Path, fitter: FitProcess) -> None:
    registry = FakeRegistry()
    report = execute(
        RunReport(trigger=Trigger(kind="drift", event_id="e-1", correlation_id="loop-1")),
        TrainingSet.of(credit_schema(), credit_examples(800)),
        credit_schema(),
        settings(tmp_path),
        registry,
        lambda: None,
        fitter,
    )
    assert report.status == "completed", report.reason
    assert report.gate_report is not None
    assert {g.name for g in report.gate_report.gates} == {
        "min_accuracy",
        "converged",
        "finite_outputs",
        "latency_ms_per_row",
        "round_trip",
    }
    artifact, meta = registry.uploads[0]
    assert meta.input_schema.name == "credit" and meta.lineage.correlation_id == "loop-1"
    assert meta.dataset is not None and meta.dataset.rows == 800 and meta.dataset.holdout_rows == 200
    assert (tmp_path / "trainer" / "datasets" / meta.dataset.path).exists()  # type: ignore[operator]
    assert (
        meta.reference_profile is not None and len(meta.reference_profile.sample["age"]) == 800
    )  # training + holdout rows
    assert set(report.phases_ms) == {"prepare", "fit", "gates", "upload"}
    assert set(report.beside_fit_ms) == {"dataset", "champion", "fit_process_fit", "fit_process_dump"}
    round_trip = next(g for g in report.gate_report.gates if g.name == "round_trip")
    assert round_trip.passed and "200 holdout rows" in (round_trip.detail or "")
    load_model(artifact, meta.digest)


def test_gate_min_accuracy_fails_on_noise(tmp_path: Path, fitter: FitProcess) -> None:
    rng = random.Random(0)
    noise = [e.model_copy(update={"label": rng.choice(["no", "yes"])}) for e in credit_examples(600)]
    report = run(tmp_path, fitter, noise)
    assert report.status == "failed" and report.failed_gate == "min_accuracy"


def test_gate_single_class(tmp_path: Path, fitter: FitProcess) -> None:
    report = run(tmp_path, fitter, [e.model_copy(update={"label": "no"}) for e in credit_examples(300)])
    assert report.failed_gate == "enough_classes"


def test_gate_convergence(tmp_path: Path, fitter: FitProcess) -> None:
    report = run(
        tmp_path,
        fitter,
        credit_examples(600),
        trainer_estimator="sklearn.linear_model.LogisticRegression",
        trainer_estimator_params={"max_iter": 1},
    )
    assert report.failed_gate == "converged"


def test_gate_champion_on_the_same_holdout(tmp_path: Path, fitter: FitProcess) -> None:
    schema, good = credit_schema(), credit_examples(800)
    champion = tiny_pipeline(
        schema, good, "sklearn.ensemble.HistGradientBoostingClassifier", {"random_state": 0}
    )
    # A candidate that may only look at one feature cannot match a champion that sees them all.
    report = run(
        tmp_path,
        fitter,
        good,
        champion=champion,
        trainer_estimator="sklearn.tree.DecisionTreeClassifier",
        trainer_estimator_params={"max_depth": 1},
        trainer_min_accuracy=0.0,
    )
    assert report.failed_gate == "beats_champion"


def test_reproducible_predictions(tmp_path: Path, fitter: FitProcess) -> None:
    data, schema = credit_examples(800), credit_schema()
    first, second = FakeRegistry(), FakeRegistry()
    for registry in (first, second):
        fitter.stop()  # each run in a fresh process: nothing carried over between fits
        execute(
            RunReport(trigger=Trigger(kind="manual")),
            TrainingSet.of(credit_schema(), data),
            schema,
            settings(tmp_path),
            registry,
            lambda: None,
            fitter,
        )
    x = encode_features(schema, [e.features for e in credit_examples(300, seed=9)])
    a = load_model(first.uploads[0][0]).predict_proba(x)  # type: ignore[attr-defined]
    b = load_model(second.uploads[0][0]).predict_proba(x)  # type: ignore[attr-defined]
    assert np.array_equal(a, b)
    assert first.uploads[0][1].dataset == second.uploads[0][1].dataset


def test_dataset_is_versioned_parquet_with_offsets(tmp_path: Path) -> None:
    schema, data = credit_schema(), credit_examples(500)
    offsets = {"0": [10, 250], "2": [0, 249]}
    x = encode_features(schema, [e.features for e in data])
    first = materialize(schema, data, x, tmp_path, 125, offsets)
    again = materialize(schema, data, x, tmp_path, 125, offsets)
    assert first == again and first.version == first.sha256[7:23]
    table = pq.read_table(tmp_path / first.path)  # type: ignore[operator]
    assert table.num_rows == 500 and "feature.income" in table.column_names
    # Missing numbers are nulls in the file, not NaN (the encoded matrix's NaN).
    missing = sum(e.features.get("income") is None for e in data)
    assert table.column("feature.income").null_count == missing > 0
    assert table.column("record_id").to_pylist()[:2] == ["app-0", "app-1"]
    manifest = DatasetManifest.model_validate_json((tmp_path / first.version / "manifest.json").read_text())
    assert manifest.offsets == offsets and manifest.source == "ctloop.examples.v1"
    assert materialize(schema, data[:-1], x[:-1], tmp_path, 125, offsets).version != first.version


def test_only_the_newest_datasets_are_kept(tmp_path: Path) -> None:
    schema, data = credit_schema(), credit_examples(60)
    x = encode_features(schema, [e.features for e in data])
    made = []
    for n in range(4):
        made.append(materialize(schema, data[n:], x[n:], tmp_path, 10, {}).version)
        os.utime(tmp_path / made[-1] / "manifest.json", (1000 + n, 1000 + n))  # written in order
    (tmp_path / "half-written").mkdir()  # no manifest: a write in progress is left alone
    assert sorted(prune_datasets(tmp_path, keep=2)) == sorted(made[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*made[2:], "half-written"])


class _CrashingRegistry(FakeRegistry):
    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        raise ConnectionError("registry went away mid-upload")


def test_a_run_that_crashes_mid_upload_registers_nothing(tmp_path: Path) -> None:
    publisher = FakePublisher()
    registry = _CrashingRegistry()
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, registry)
    trainer.champion_version = 1
    for example in credit_examples(400):
        trainer.examples.add(example)
    report = run_one(trainer, Trigger(kind="manual"))
    assert report.status == "failed" and "registry went away" in (report.reason or "")
    assert report.version is None and not registry.uploads
    assert [t for t, _ in publisher.events] == ["training.started", "training.failed"]


def test_a_small_training_set_lets_the_small_sample_estimator_compete(
    tmp_path: Path, fitter: FitProcess
) -> None:
    def upload(examples: int, **overrides: object) -> tuple[RunReport, VersionMetadata]:
        registry = FakeRegistry()
        report = execute(
            RunReport(trigger=Trigger(kind="manual")),
            TrainingSet.of(credit_schema(), credit_examples(examples)),
            credit_schema(),
            settings(tmp_path, **overrides),
            registry,
            lambda: None,
            fitter,
        )
        assert report.status == "completed", report.reason
        return report, registry.uploads[0][1]

    configured, small = (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.linear_model.LogisticRegression",
    )
    report, meta = upload(400)  # 300 training rows, under the default 1,000
    assert set(report.estimators) == {configured, small}
    kept = small if report.estimators[small] >= report.estimators[configured] else configured
    assert meta.estimator == kept
    for overrides in ({"trainer_small_sample_rows": 300}, {"trainer_small_sample_estimator": ""}):
        report, meta = upload(400, **overrides)
        assert report.estimators == {} and meta.estimator == configured
    report, meta = upload(100)  # 75 training rows: the small-sample estimator alone, no choice
    assert report.estimators == {} and meta.estimator == small
