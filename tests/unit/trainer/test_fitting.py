"""The fit process (`services.trainer.fitting`): a failure costs one run, never the service,
never a half upload, and the process never outlives its trainer; a small training set keeps
the simpler estimator only when cross-validation says it does as well."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from services.trainer.examples import TrainingSet
from services.trainer.fitting import FitError, FitJob, FitProcess, Serialized, fit_and_examine, fit_job
from services.trainer.gates import Evidence
from services.trainer.run import RunReport, Trigger, execute
from services.trainer.service import Trainer
from shared.schema import DatasetSchema
from shared.serialization import load_model
from tests.fixtures import credit_examples, credit_schema
from tests.unit.trainer.helpers import FakePublisher, FakeRegistry, run, run_one, settings, wait_for

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
            )
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return report, thread, raised


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
        wait_for(lambda: "prepare" in report.phases_ms, "the job to reach the fit process")
        os.kill(fitter.pid, signal.SIGKILL)
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
    )
    trainer.champion_version = 1
    for example in credit_examples(400):
        trainer.examples.add(example)
    report = run_one(trainer, Trigger(kind="manual"))
    assert report.status == "failed" and (report.reason or "").startswith("fit failed: the fit took longer")
    assert not registry.uploads
    assert [t for t, _ in publisher.events] == ["training.started", "training.failed"]


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
            wait_for(lambda: _cpu_seconds(child) > 3.0, "the fit process to be fitting", timeout_s=120)
        trainer.kill()
        trainer.wait(30)
        wait_for(lambda: _gone(child), "the fit process to end after its trainer", timeout_s=60)
    finally:
        trainer.kill()
        trainer.wait(30)


def _small_job(x: np.ndarray, y: np.ndarray) -> FitJob:
    schema = DatasetSchema.model_validate(
        {
            "name": "plane",
            "label": {"name": "y", "type": "categorical", "classes": ["0", "1"]},
            "features": [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"}],
        }
    )
    train = int(len(x) * 0.75)
    return FitJob(
        schema,
        "sklearn.ensemble.HistGradientBoostingClassifier",
        {"max_iter": 100, "random_state": 0},
        x[:train],
        y[:train],
        x[train:],
        ("sklearn.linear_model.LogisticRegression", {}),
    )


def _chosen(job: FitJob) -> Serialized:
    sent: list[object] = []
    fit_and_examine(job, sent.append)
    serialized, evidence = sent
    assert isinstance(serialized, Serialized) and isinstance(evidence, Evidence)
    return serialized


def test_a_small_training_set_keeps_the_simpler_model_when_it_scores_as_well() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)  # a line: the simple model's concept
    serialized = _chosen(_small_job(x, y))
    assert serialized.estimator == "sklearn.linear_model.LogisticRegression"
    scores = serialized.cross_validated
    assert set(scores) == {
        "sklearn.linear_model.LogisticRegression",
        "sklearn.ensemble.HistGradientBoostingClassifier",
    }
    assert (
        scores["sklearn.linear_model.LogisticRegression"]
        >= scores["sklearn.ensemble.HistGradientBoostingClassifier"]
    )
    assert type(load_model(serialized.artifact, serialized.digest).steps[-1][1]).__name__ == (  # type: ignore[attr-defined]
        "LogisticRegression"
    )


def test_a_small_training_set_keeps_the_configured_model_when_it_scores_higher() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(400, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)  # a checkerboard no line can separate
    serialized = _chosen(_small_job(x, y))
    assert serialized.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    scores = serialized.cross_validated
    assert scores[serialized.estimator] > scores["sklearn.linear_model.LogisticRegression"] + 0.2


def test_without_a_small_sample_estimator_only_the_configured_one_is_fitted() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    job = dataclasses.replace(_small_job(x, (x[:, 0] > 0).astype(int)), small_sample=None)
    serialized = _chosen(job)
    assert serialized.estimator == job.estimator and serialized.cross_validated == {}


def test_the_training_set_size_decides_which_estimators_are_fitted(tmp_path: Path) -> None:
    x, y, schema = np.zeros((1200, 2)), np.zeros(1200, dtype=int), credit_schema()

    def job(rows: int, **overrides: object) -> FitJob:
        return fit_job(settings(tmp_path, **overrides), schema, x[:rows], y[:rows], x[:0])

    small = ("sklearn.linear_model.LogisticRegression", {})
    assert job(75).small_sample == small and job(75).small_sample_only  # alone: no choice
    assert job(100).small_sample == small and not job(100).small_sample_only  # the choice
    assert job(999).small_sample == small and not job(999).small_sample_only
    assert job(1000).small_sample is None  # the configured estimator alone
    assert job(75, trainer_small_sample_estimator="").small_sample is None  # off
    assert not job(75, trainer_small_sample_direct_rows=0).small_sample_only


def test_the_smallest_training_sets_fit_the_simpler_model_alone_unless_it_does_not_converge() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(100, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)  # where the configured model would win the choice
    alone = dataclasses.replace(_small_job(x, y), small_sample_only=True)
    serialized = _chosen(alone)
    assert serialized.estimator == "sklearn.linear_model.LogisticRegression"
    assert serialized.cross_validated == {}  # no cross-validation was run
    stuck = dataclasses.replace(
        alone, small_sample=("sklearn.linear_model.LogisticRegression", {"max_iter": 1})
    )
    assert _chosen(stuck).estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
