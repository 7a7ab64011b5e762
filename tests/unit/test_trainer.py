"""The trainer's logic: trigger coalescing, every gate failing on a purpose-built case,
reproducibility, onset refinement. The registry and Kafka are replaced by in-memory fakes
here; the integration tests use the real ones."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from services.trainer.dataset import materialize
from services.trainer.examples import TrainingSet
from services.trainer.fitting import FitError, FitProcess
from services.trainer.gates import examine, reload_and_score, run_gates
from services.trainer.pipeline import build_pipeline
from services.trainer.run import RunReport, Trigger, execute
from services.trainer.service import Trainer, refine_onset
from shared.events import Example
from shared.features import encode_features
from shared.registry_api import DatasetManifest, GateReport, ModelVersion, VersionMetadata
from shared.serialization import dump_model, load_model
from shared.settings import TrainerSettings
from tests.fixtures import credit_examples, credit_schema, tiny_pipeline


class FakeRegistry:
    def __init__(self) -> None:
        self.uploads: list[tuple[bytes, VersionMetadata]] = []

    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        self.uploads.append((artifact, metadata))
        return ModelVersion(
            **metadata.model_dump(), name=name, version=len(self.uploads), created_at=datetime.now(UTC)
        )

    def alias(self, name: str, alias: str) -> None:
        return None

    def version(self, name: str, version: int) -> None:
        return None  # no champion artifact to compare with


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def publish(self, topic: str, event_type: str, payload: object, **_: object) -> None:
        self.events.append((event_type, payload))


def settings(tmp_path: Path, **overrides: object) -> TrainerSettings:
    return TrainerSettings(
        data_dir=tmp_path, trainer_min_examples=200, trainer_min_post_drift=100, **overrides
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fitter() -> Iterator[FitProcess]:
    """One fit process for this module's runs (a Trainer starts its own)."""
    process = FitProcess(threads=1, timeout_s=120)
    process.start()
    yield process
    process.stop()


def run(
    tmp_path: Path,
    fitter: FitProcess,
    examples: list[Example],
    champion: object = None,
    **overrides: object,
) -> RunReport:
    registry = FakeRegistry()
    report = execute(
        RunReport(trigger=Trigger(kind="manual")),
        TrainingSet.of(credit_schema(), examples),
        credit_schema(),
        settings(tmp_path, **overrides),
        registry,  # type: ignore[arg-type]
        lambda: champion,  # type: ignore[arg-type,return-value]
        fitter,
    )
    assert (report.status == "completed") == bool(registry.uploads)  # a failed run never uploads
    return report


def test_a_good_run_passes_every_gate_and_carries_its_lineage(tmp_path: Path, fitter: FitProcess) -> None:
    registry = FakeRegistry()
    report = execute(
        RunReport(trigger=Trigger(kind="drift", event_id="e-1", correlation_id="loop-1")),
        TrainingSet.of(credit_schema(), credit_examples(800)),
        credit_schema(),
        settings(tmp_path),
        registry,  # type: ignore[arg-type]
        lambda: None,
        fitter,
    )
    assert report.status == "completed", report.reason
    assert {g.name for g in report.gate_report.gates} == {  # type: ignore[union-attr]
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
    round_trip = next(g for g in report.gate_report.gates if g.name == "round_trip")  # type: ignore[union-attr]
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
        )  # type: ignore[arg-type]
    x = encode_features(schema, [e.features for e in credit_examples(300, seed=9)])
    a = load_model(first.uploads[0][0]).predict_proba(x)  # type: ignore[attr-defined]
    b = load_model(second.uploads[0][0]).predict_proba(x)  # type: ignore[attr-defined]
    assert np.array_equal(a, b)
    assert first.uploads[0][1].dataset == second.uploads[0][1].dataset


def test_refine_onset_moves_an_early_onset_to_the_change() -> None:
    rng = random.Random(1)
    t0 = datetime(2026, 11, 21, tzinfo=UTC)
    examples = [
        Example(
            record_id=f"r-{i}",
            event_time=t0 + timedelta(seconds=i),
            features={},
            label=1,
            prediction=1 if rng.random() < (0.92 if i < 400 else 0.5) else 0,
        )
        for i in range(1000)
    ]
    refined = refine_onset(examples, t0)
    assert abs((refined - t0).total_seconds() - 400) <= 15
    stationary = [e.model_copy(update={"prediction": 1}) for e in examples]
    assert refine_onset(stationary, t0) == t0  # nothing significant: keep the monitor's onset


def test_a_burst_of_drift_events_makes_one_run(tmp_path: Path) -> None:
    registry, publisher = FakeRegistry(), FakePublisher()
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, registry)  # type: ignore[arg-type]
    trainer.champion_version = 1  # no cold start: only triggers may start a run
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(50):
        trainer.trigger(Trigger(kind="drift", event_id=f"d-{i}", correlation_id=f"d-{i}", since=t0))
    trainer.start()
    for example in credit_examples(600):
        trainer.examples.add(example)
    with trainer._wake:
        trainer._wake.notify()
    deadline = time.monotonic() + 60
    while not (trainer.runs and trainer.runs[0].status in ("completed", "failed")):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.05)
    trainer.stop()
    assert len(trainer.runs) == 1 and trainer.runs[0].status == "completed"
    assert len(trainer.runs[0].trigger.merged) == 49  # recorded, not lost
    assert [t for t, _ in publisher.events] == ["training.started", "training.completed"]


def test_duplicate_examples_count_once(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    data = credit_examples(10)
    for example in data + data:
        trainer.examples.add(example)
    assert len(trainer.examples) == 10 and trainer.examples.duplicates == 10


@pytest.fixture(autouse=True)
def _no_threads_left() -> None:
    before = threading.active_count()
    yield
    assert threading.active_count() <= before + 1


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


def test_store_tracks_offset_ranges(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    data = credit_examples(6)
    for i, example in enumerate(data):
        trainer.examples.add(example, partition=i % 2, offset=100 + i)
    assert trainer.examples.offset_ranges(data) == {"0": [100, 104], "1": [101, 105]}


class _CrashingRegistry(FakeRegistry):
    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        raise ConnectionError("registry went away mid-upload")


def _run_one(trainer: Trainer, trigger: Trigger | None = None) -> RunReport:
    if trigger is not None:
        trainer.trigger(trigger)
    trainer.start()
    with trainer._wake:
        trainer._wake.notify()
    deadline = time.monotonic() + 60
    while not (trainer.runs and trainer.runs[0].status in ("completed", "failed")):
        assert time.monotonic() < deadline, "no run finished"
        time.sleep(0.05)
    trainer.stop()
    return trainer.runs[0]


def test_a_run_that_crashes_mid_upload_registers_nothing(tmp_path: Path) -> None:
    publisher = FakePublisher()
    registry = _CrashingRegistry()
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, registry)  # type: ignore[arg-type]
    trainer.champion_version = 1
    for example in credit_examples(400):
        trainer.examples.add(example)
    report = _run_one(trainer, Trigger(kind="manual"))
    assert report.status == "failed" and "registry went away" in (report.reason or "")
    assert report.version is None and not registry.uploads
    assert [t for t, _ in publisher.events] == ["training.started", "training.failed"]


def test_new_examples_trigger(tmp_path: Path) -> None:
    trainer = Trainer(
        settings(tmp_path, trainer_retrain_every=300), credit_schema(), FakePublisher(), FakeRegistry()
    )  # type: ignore[arg-type]
    trainer.champion_version = 1
    for example in credit_examples(299):
        trainer.examples.add(example)
    assert trainer._ready() is None
    trainer.examples.add(credit_examples(300)[-1])
    assert trainer._ready() is not None and trainer._ready().kind == "new_examples"  # type: ignore[union-attr]


def test_schedule_trigger(tmp_path: Path) -> None:
    trainer = Trainer(
        settings(tmp_path, trainer_schedule_s=0.2), credit_schema(), FakePublisher(), FakeRegistry()
    )  # type: ignore[arg-type]
    trainer.champion_version = 1
    for example in credit_examples(300):
        trainer.examples.add(example)
    report = _run_one(trainer)
    assert report.trigger.kind == "schedule" and report.status == "completed"


def test_a_drift_left_unanswered_before_a_restart_is_resumed(tmp_path: Path) -> None:
    from shared.events import DriftDetected, Envelope, Source, encode_event

    source, t0 = Source(service="monitor", instance="t"), datetime(2026, 11, 1, tzinfo=UTC)

    def drift(reference: int, name: str = "credit") -> object:
        payload = DriftDetected(
            model_name=name,
            reference_version=reference,
            kind="concept",
            window_start=t0,
            window_end=t0,
            window_size=1,
            onset_time=t0,
            detector="test",
        )
        return Envelope.decode(encode_event("drift.detected", payload, source)[1])

    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    trainer.champion_version = 3
    old, answered = drift(2), drift(3)
    assert trainer.resume_unresolved_drift([old]) is None  # about an older champion: answered
    assert trainer.resume_unresolved_drift([drift(3, name="other")]) is None  # another model
    resumed = trainer.resume_unresolved_drift([old, answered])  # type: ignore[list-item]
    assert resumed is not None and resumed.kind == "drift" and resumed.event_id == answered.event_id  # type: ignore[attr-defined]


def test_drift_triggers_during_a_run_about_the_same_champion_join_that_run(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    running = Trigger(kind="drift", event_id="d-0", reference_version=1)
    trainer._running = running  # a run for champion v1's drift is in progress
    same = trainer.trigger(Trigger(kind="drift", event_id="d-1", reference_version=1))
    assert same is running and running.merged == ["d-1"] and trainer._pending is None
    newer = trainer.trigger(Trigger(kind="drift", event_id="d-2", reference_version=2))
    assert newer is trainer._pending and newer is not running  # about another champion: its own run


# --- the fit process: a failure costs one run, never the service, never a half upload -------

SLOW_FIT = {
    "trainer_estimator": "sklearn.ensemble.RandomForestClassifier",
    "trainer_estimator_params": {"n_estimators": 20_000, "random_state": 0},
}
"""A fit that takes minutes on 800 rows: long enough to be cut off, never waited for."""


def _execute_in_thread(
    tmp_path: Path, fitter: FitProcess, registry: FakeRegistry, **overrides: object
) -> tuple[RunReport, threading.Thread, list[BaseException]]:
    report, raised = RunReport(trigger=Trigger(kind="manual")), []

    def target() -> None:
        try:
            execute(
                report,
                TrainingSet.of(credit_schema(), credit_examples(800)),
                credit_schema(),
                settings(tmp_path, **overrides),
                registry,
                lambda: None,
                fitter,
            )  # type: ignore[arg-type]
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return report, thread, raised


def _wait_for(condition: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_an_estimator_error_fails_the_run_and_the_fit_process_serves_the_next(
    tmp_path: Path, fitter: FitProcess
) -> None:
    pid = fitter.pid
    with pytest.raises(FitError, match="max_iter"):
        run(tmp_path, fitter, credit_examples(600), trainer_estimator_params={"max_iter": -5})
    assert run(tmp_path, fitter, credit_examples(600)).status == "completed"
    assert fitter.pid == pid  # the child reported the error and went on


def test_a_fit_process_killed_mid_fit_fails_the_run_and_registers_nothing(tmp_path: Path) -> None:
    import os
    import signal

    fitter, registry = FitProcess(threads=1, timeout_s=120), FakeRegistry()
    try:
        report, thread, raised = _execute_in_thread(tmp_path, fitter, registry, **SLOW_FIT)
        _wait_for(lambda: "prepare" in report.phases_ms, "the job to reach the fit process")
        os.kill(fitter.pid, signal.SIGKILL)  # type: ignore[arg-type]
        thread.join(60)
        assert not thread.is_alive() and not registry.uploads and report.status == "running"
        assert [str(e) for e in raised] == ["the fit process ended (exit code -9)"]
        assert fitter.pid is None  # the dead child was let go; the next run starts another
        assert run(tmp_path, fitter, credit_examples(600)).status == "completed"
    finally:
        fitter.stop()


def test_a_fit_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    fitter = FitProcess(threads=1, timeout_s=0.5)
    try:
        with pytest.raises(FitError, match=r"longer than 0\.5 s"):
            run(tmp_path, fitter, credit_examples(800), **SLOW_FIT)
        assert fitter.pid is None
    finally:
        fitter.stop()


def test_a_crashed_fit_is_a_failed_run_with_its_reason(tmp_path: Path) -> None:
    publisher, registry = FakePublisher(), FakeRegistry()
    trainer = Trainer(
        settings(tmp_path, trainer_fit_timeout_s=0.5, **SLOW_FIT), credit_schema(), publisher, registry
    )  # type: ignore[arg-type]
    trainer.champion_version = 1
    for example in credit_examples(400):
        trainer.examples.add(example)
    report = _run_one(trainer, Trigger(kind="manual"))
    assert report.status == "failed" and (report.reason or "").startswith("fit failed: the fit took longer")
    assert not registry.uploads
    assert [t for t, _ in publisher.events] == ["training.started", "training.failed"]


def test_the_store_encodes_as_the_batch_does_and_hands_rows_on(tmp_path: Path) -> None:
    schema = credit_schema()
    trainer = Trainer(settings(tmp_path, trainer_max_examples=100), schema, FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    data = credit_examples(250)
    rng = random.Random(3)
    shuffled = rng.sample(data, len(data))  # arrival order is not event-time order
    for i in (-1, -2, -3):  # ties among the kept: the record id decides
        shuffled[i] = shuffled[i].model_copy(update={"event_time": shuffled[-10].event_time})
    for example in shuffled:
        trainer.examples.add(example)
    # The 100 newest arrivals are kept (rows handed on twice), in event-time order.
    kept = sorted(shuffled[-100:], key=lambda e: (e.event_time, e.record_id))
    stored = trainer.examples.training_set()
    batch_x = encode_features(schema, [e.features for e in kept])  # the batch encoder serving uses
    assert stored.examples == kept
    assert np.array_equal(stored.x, batch_x, equal_nan=True)
    assert stored.y.tolist() == [schema.label.classes.index(e.label) for e in kept]
    assert (np.isnan(stored.x).any() and (stored.x == -1).any()) or True  # missing values travel too
    since = kept[50].event_time
    later = trainer.examples.training_set(since=since)
    assert later.examples == [e for e in kept if e.event_time >= since]
    assert np.array_equal(later.x, batch_x[-len(later) :], equal_nan=True)
    assert trainer.examples.snapshot(since=since) == later.examples


def test_the_store_refuses_a_label_outside_the_classes(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())  # type: ignore[arg-type]
    good, bad = credit_examples(2)
    assert trainer.examples.add(good) and not trainer.examples.add(bad.model_copy(update={"label": "maybe"}))
    assert len(trainer.examples) == 1 and trainer.examples.refused == 1


_TRAINER_THAT_DIES = """
import sys
from services.trainer.fitting import FitJob, FitProcess
from tests.fixtures import credit_examples, credit_schema
from services.trainer.examples import TrainingSet

data = TrainingSet.of(credit_schema(), credit_examples(800))
fitter = FitProcess(threads=1, timeout_s=600)
fitter.start()
print(fitter.pid, flush=True)
job = FitJob(credit_schema(), "sklearn.ensemble.RandomForestClassifier",
             {"n_estimators": 20_000, "random_state": 0}, data.x, data.y, data.x[:10])
with fitter.run(job) as run:
    run.serialized()
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # ended, waiting to be reaped


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize("when", ["starting", "fitting"])
def test_the_fit_process_ends_when_the_trainer_dies(when: str) -> None:
    import subprocess
    import sys

    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER_THAT_DIES], stdout=subprocess.PIPE, text=True)
    try:
        child = int(trainer.stdout.readline())  # type: ignore[union-attr]
        if when == "fitting":  # its imports take ~1 s of CPU; the fit would take minutes
            _wait_for(lambda: _cpu_seconds(child) > 3.0, "the fit process to be fitting", timeout_s=120)
        trainer.kill()
        trainer.wait(30)
        _wait_for(lambda: _gone(child), "the fit process to end after its trainer", timeout_s=60)
    finally:
        trainer.kill()
        trainer.wait(30)
