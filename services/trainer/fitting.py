"""The fit process: a warm child process that fits a candidate, serializes it and examines it.

Why a process of its own:
- the trainer's process stays free while the estimator fits: it writes the dataset version
  and scores the champion beside the fit, on the other core (a thread could not: the fit
  holds the GIL between its native steps, and measured no faster that way);
- its Kafka loops and HTTP API never wait on the GIL behind a long fit;
- a fit that crashes in native code, runs out of memory or runs past
  `trainer_fit_timeout_s` costs one run, not the service: the next run gets a new process.

A small training set (a drift's first candidates) may choose between the configured estimator
and a simpler one by cross-validation on its training rows (`fit_candidate`); the smallest
(a drift's very first candidate) are fitted with the simpler one alone (`fit_job`).

One job at a time. The child answers each job with two messages: `Serialized` as soon as the
model is dumped (the trainer loads it while the child goes on), then the gates' `Evidence`.
They travel pickled over a socket pair private to the trainer and the child it started (no
one else can write to it); the artifact itself is skops bytes, loaded with the allow-list.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from services.trainer.gates import Evidence, examine
from services.trainer.pipeline import build_pipeline, make_estimator
from shared.schema import DatasetSchema
from shared.serialization import dump_model
from shared.settings import TrainerSettings

T = TypeVar("T")


SELECTION_FOLDS = 3
"""Folds of the cross-validation that chooses a small training set's estimator."""


class FitError(RuntimeError):
    """The fit did not produce a candidate: the estimator raised, or the process died or ran
    out of time."""


@dataclass(frozen=True)
class FitJob:
    schema: DatasetSchema
    estimator: str
    params: dict[str, object]
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    small_sample: tuple[str, dict[str, object]] | None = None
    """A second estimator (import path, parameters) that competes with `estimator` on a small
    training set (`trainer_small_sample_estimator`): see `fit_candidate`."""
    small_sample_only: bool = False
    """Fit `small_sample` without the choice (`estimator` only if it does not converge)."""


@dataclass(frozen=True)
class Serialized:
    """The fitted model's artifact (empty, with `error`, when it could not be serialized)."""

    artifact: bytes
    digest: str
    error: str | None
    fit_ms: float
    dump_ms: float
    estimator: str
    """Import path of the estimator the candidate ends in (the one chosen, when two competed)."""
    cross_validated: dict[str, float] = field(default_factory=dict)
    """When two estimators competed: each one's cross-validated accuracy, by import path."""


@dataclass(frozen=True)
class _Failed:
    reason: str


@dataclass(frozen=True)
class _Fitted:
    estimator: str
    model: Pipeline
    convergence: list[str]
    """The fit's convergence warnings (the gates report them)."""


def _fit(job: FitJob, estimator: str, params: dict[str, object]) -> _Fitted:
    model = build_pipeline(job.schema, make_estimator(estimator, params))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(job.x_train, job.y_train)
    return _Fitted(
        estimator, model, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    )


def fit_job(
    settings: TrainerSettings,
    schema: DatasetSchema,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_holdout: np.ndarray,
) -> FitJob:
    """The job for a training set, with the estimators its size calls for: the configured one;
    under `trainer_small_sample_rows` rows, the small-sample one competing with it; under
    `trainer_small_sample_direct_rows`, the small-sample one alone."""
    job = FitJob(
        schema, settings.trainer_estimator, settings.trainer_estimator_params, x_train, y_train, x_holdout
    )
    small, rows = settings.trainer_small_sample_estimator, len(x_train)
    if not small or small == settings.trainer_estimator or rows >= settings.trainer_small_sample_rows:
        return job
    only = rows < settings.trainer_small_sample_direct_rows
    return replace(job, small_sample=(small, settings.trainer_small_sample_params), small_sample_only=only)


def _cross_validated(job: FitJob, estimator: str, params: dict[str, object]) -> float:
    model = build_pipeline(job.schema, make_estimator(estimator, params))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the final fit's are what count
        folds = StratifiedKFold(SELECTION_FOLDS)
        return float(np.mean(cross_val_score(model, job.x_train, job.y_train, cv=folds, error_score="raise")))


def fit_candidate(job: FitJob) -> tuple[_Fitted, dict[str, float]]:
    """The job's candidate, and, when a small-sample estimator competed, each one's
    cross-validated accuracy on the training rows (the one chosen is then fitted on all of
    them; the small one wins a tie).

    The choice is made on the training rows so that the holdout stays an unbiased judge for the
    gates: the better of two on the holdout would then be compared with the champion on the same
    rows. NOTE: bench_loop measured no difference between the two ways on its own (rainfall,
    3 seeds: 73.5% picking on the holdout, 73.4% by cross-validation); what had cost rainfall
    ~1.5 points was serving's swap check refusing a change of estimator (perf_check.py)."""
    if job.small_sample is None:
        return _fit(job, job.estimator, job.params), {}
    if job.small_sample_only:
        return _converged_or_configured(job, _fit(job, *job.small_sample)), {}
    competing = dict([job.small_sample, (job.estimator, job.params)])  # small first: ties go to it
    try:
        scores = {name: _cross_validated(job, name, params) for name, params in competing.items()}
    except ValueError:  # too few rows of a class to fold: no choice, as for a large set
        return _fit(job, job.estimator, job.params), {}
    best = max(scores, key=lambda name: scores[name])
    return _converged_or_configured(job, _fit(job, best, competing[best])), scores


def _converged_or_configured(job: FitJob, fitted: _Fitted) -> _Fitted:
    """`fitted`, or the configured estimator's fit when `fitted` is another one that did not
    converge (it would fail its gate; the configured one may pass)."""
    if fitted.convergence and fitted.estimator != job.estimator:
        return _fit(job, job.estimator, job.params)
    return fitted


def fit_and_examine(job: FitJob, send: Callable[[object], None]) -> None:
    """Fit the job's pipeline, then send `Serialized` and `Evidence` (the child's work)."""
    start = time.perf_counter()
    fitted, scores = fit_candidate(job)
    done = time.perf_counter()
    try:
        artifact, digest, error = *dump_model(fitted.model), None
    except Exception as exc:  # the round-trip gate reports it
        artifact, digest, error = b"", "", f"{type(exc).__name__}: {exc}"[:300]
    dumped = time.perf_counter()
    send(
        Serialized(
            artifact, digest, error, (done - start) * 1000, (dumped - done) * 1000, fitted.estimator, scores
        )
    )
    send(examine(job.schema, fitted.model, job.x_holdout, fitted.convergence))


def _exit_with_the_trainer(trainer_pid: int) -> None:
    # Between jobs the child notices the trainer's end at once (its recv ends); during a fit
    # it would not until the fit was done, which can be long.
    while os.getppid() == trainer_pid:
        time.sleep(1.0)
    os._exit(1)


def _serve(conn: Connection, threads: int, trainer_pid: int) -> None:
    """The child's loop: one job after another until the trainer closes its end."""
    from shared.sklearn_speedups import skip_absent_pandas

    # NOTE: the trainer's pid comes from the trainer: if it died while this process started,
    # our parent is already someone else, and a job it sent may be waiting to be fitted.
    threading.Thread(target=_exit_with_the_trainer, args=(trainer_pid,), daemon=True).start()
    skip_absent_pandas()  # the latency gate's one-row predictions, as in serving
    with threadpool_limits(threads):
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):  # the trainer is gone or let this process go
                return
            try:
                fit_and_examine(job, conn.send)
            except ConnectionError:  # the trainer went away mid-job
                return
            except Exception as exc:
                try:
                    conn.send(_Failed(f"{type(exc).__name__}: {exc}"[:500]))
                except ConnectionError:
                    return


class FitRun:
    """The trainer's side of one job: receive its two answers, in order, within the deadline."""

    def __init__(self, process: FitProcess, deadline: float) -> None:
        self._process, self._deadline, self.finished = process, deadline, False

    def serialized(self) -> Serialized:
        return self._receive(Serialized)

    def evidence(self) -> Evidence:
        evidence = self._receive(Evidence)
        self.finished = True
        return evidence

    def _receive(self, kind: type[T]) -> T:
        message = self._process.receive(self._deadline)
        if isinstance(message, _Failed):
            self.finished = True  # the child is back at its loop, ready for the next job
            raise FitError(message.reason)
        if not isinstance(message, kind):
            raise FitError(f"fit process sent {type(message).__name__}, expected {kind.__name__}")
        return message


class FitProcess:
    """Owns the child process; starts it on first use and replaces it after a failure."""

    def __init__(self, threads: int, timeout_s: float) -> None:
        self.threads, self.timeout_s = threads, timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's pid, while there is one."""
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the child now (it imports scikit-learn before the first job comes)."""
        if self._process is not None and self._process.poll() is None:
            return
        self.stop()
        # NOTE: a fresh interpreter that runs this module, not multiprocessing: fork would
        # copy the Kafka client threads' locks in whatever state they were, and spawn would
        # import the caller's main module again in the child.
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(self.threads), str(os.getpid())],
                pass_fds=[theirs.fileno()],
            )
        with self._lock:
            self._process, self._conn = process, Connection(ours.detach())

    @contextmanager
    def run(self, job: FitJob) -> Iterator[FitRun]:
        """Hand `job` to the child. A run left before both answers came (an error on the
        trainer's side, a timeout) stops the child, so no stale answer reaches the next run."""
        self.start()
        try:
            if self._conn is None:
                raise OSError("no connection")
            self._conn.send(job)
        except OSError as exc:  # the child died between runs
            self.stop()
            raise FitError(f"could not hand the job to the fit process: {exc}") from None
        run = FitRun(self, time.monotonic() + self.timeout_s)
        try:
            yield run
        finally:
            if not run.finished:
                self.stop()

    def receive(self, deadline: float) -> object:
        conn, process = self._conn, self._process
        if conn is None or process is None:
            raise FitError("the fit process was stopped")
        try:
            while not conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    self.stop()
                    raise FitError(f"the fit took longer than {self.timeout_s:g} s and was stopped")
                if process.poll() is not None:
                    break
            return conn.recv()
        except (EOFError, OSError):  # OSError: stopped from another thread
            try:
                code = process.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            raise FitError(f"the fit process ended (exit code {code})") from None

    def stop(self) -> None:
        """Stop the child (safe from any thread; a run waiting on it fails with FitError)."""
        with self._lock:
            conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


if __name__ == "__main__":
    # Through the module's own name, so what the child sends unpickles as these classes
    # in the trainer (not as `__main__.Serialized`).
    from services.trainer import fitting

    fitting._serve(Connection(int(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]))
