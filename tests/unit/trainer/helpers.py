"""What the trainer's unit tests share: fakes of its registry and publisher (implementing the
protocols it takes), settings, and helpers to run a training end to end in-process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from kafka.errors import KafkaTimeoutError

from services.trainer.examples import TrainingSet
from services.trainer.fitting import FitProcess
from services.trainer.run import RunReport, Trigger, execute
from services.trainer.service import Trainer
from shared.events import EVENT_TYPES, Example, Payload
from shared.ids import new_id
from shared.registry_api import ModelVersion, VersionMetadata
from shared.settings import TrainerSettings
from shared.signing import Verifier
from shared.vocabulary import Alias
from tests.fixtures import credit_schema


class FakeRegistry:
    """A `ModelVersions` that keeps uploads in memory and has no champion to hand out."""

    verifier: Verifier | None = None

    def __init__(self, promotes: bool = False) -> None:
        self.uploads: list[tuple[bytes, VersionMetadata]] = []
        self.promotes = promotes
        """Whether an upload becomes champion at once (policy `auto`)."""

    def stage(self, artifact: bytes) -> None:
        pass  # uploads carry their artifact

    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        self.uploads.append((artifact, metadata))
        return ModelVersion(
            **metadata.model_dump(),
            name=name,
            version=len(self.uploads),
            created_at=datetime.now(UTC),
            aliases=[Alias.CHAMPION] if self.promotes else [],
        )

    def alias(self, name: str, alias: str = Alias.CHAMPION) -> ModelVersion | None:
        return None

    def version(self, name: str, version: int) -> ModelVersion | None:
        return None  # no champion artifact to compare with

    def versions(self, name: str) -> list[ModelVersion]:
        return []  # no earlier model to recall

    def artifact(self, name: str, version: ModelVersion) -> bytes:
        raise AssertionError("no artifact to download")


class Sent:
    """A producer future: acknowledged, or failing once when told to."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class FakePublisher:
    """Records (event type, payload) of what it was asked to send; `refuse` makes the next
    sends of those payload classes fail as a producer times out, once each."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.ids: list[str] = []
        """The event id of every send asked for, failed ones included."""
        self.refuse: list[type] = []
        self._lock = threading.Lock()

    def publish(
        self, topic: str, payload: Payload, key: str, event_id: str | None = None, **_: object
    ) -> tuple[str, Sent]:
        event_id = event_id or new_id()
        with self._lock:
            self.ids.append(event_id)
            if type(payload) in self.refuse:
                self.refuse.remove(type(payload))
                return event_id, Sent(KafkaTimeoutError("injected: no acknowledgement"))
            self.events.append((EVENT_TYPES[type(payload)], payload))
        return event_id, Sent()

    def dead_letter(self, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected dead letter: {args}")


def settings(tmp_path: Path, **overrides: object) -> TrainerSettings:
    return TrainerSettings.model_validate(
        {"data_dir": tmp_path, "trainer_min_examples": 200, "trainer_min_post_drift": 100, **overrides}
    )


def run(
    tmp_path: Path,
    fitter: FitProcess,
    examples: list[Example],
    champion: object = None,
    **overrides: object,
) -> RunReport:
    """One `execute` with a manual trigger; checks a failed run never uploads."""
    registry = FakeRegistry()
    report = execute(
        RunReport(trigger=Trigger(kind="manual")),
        TrainingSet.of(credit_schema(), examples),
        credit_schema(),
        settings(tmp_path, **overrides),
        registry,
        lambda: champion,  # type: ignore[arg-type,return-value]
        fitter,
    )
    assert (report.status == "completed") == bool(registry.uploads)  # a failed run never uploads
    return report


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def runs_finished(trainer: Trainer, count: int) -> bool:
    """Whether the trainer's first `count` runs are over, bookkeeping included: a run's
    status is final before the worker has set what follows it (the next refresh, the
    champion), which is done once the worker is idle or on its next run."""
    runs = trainer.runs
    return (
        len(runs) >= count
        and runs[count - 1].status in ("completed", "failed")
        and (len(runs) > count or trainer._running is None)
    )


def run_one(trainer: Trainer, trigger: Trigger | None = None) -> RunReport:
    """Queue `trigger` (if any), run the trainer's worker until its first run ends."""
    from shared.supervision import Supervisor

    if trigger is not None:
        trainer.trigger(trigger)
    trainer.prepare()
    trainer.active.set()  # the only replica
    supervisor = Supervisor("test")
    supervisor.add(trainer)
    supervisor.start()
    try:
        wait_for(lambda: runs_finished(trainer, 1), "a finished run")
        wait_for(lambda: not trainer.unsent, "its events to be sent")
    finally:
        supervisor.stop(timeout_s=30)
    return trainer.runs[0]


Feed = Callable[[list[Example], int], None]


@contextmanager
def fed(trainer: Trainer) -> Iterator[Feed]:
    """The trainer's worker running; yields `feed(examples, runs)`, which adds examples, wakes
    the worker and waits until its first `runs` runs are over."""
    from shared.supervision import Supervisor

    trainer.prepare()
    trainer.active.set()
    supervisor = Supervisor("test")
    supervisor.add(trainer)
    supervisor.start()

    def feed(examples: list[Example], runs: int) -> None:
        for example in examples:
            trainer.examples.add(example)
        with trainer._wake:
            trainer._wake.notify()
        wait_for(lambda: runs_finished(trainer, runs), f"run {runs}")

    try:
        yield feed
    finally:
        supervisor.stop(timeout_s=30)
        trainer.stop()
