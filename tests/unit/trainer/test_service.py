"""The trainer's loop (`services.trainer.service.Trainer`): triggers coalesce into runs, a
drift left unanswered is resumed, the onset is refined, and a run event Kafka did not take is
sent after the worker restarts."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import BaseModel

from services.trainer.app import build_app
from services.trainer.run import Trigger
from services.trainer.service import ANSWERED_KEPT, Trainer, refine_onset
from shared import topics
from shared.events import (
    DriftDetected,
    Envelope,
    Example,
    RunRequested,
    Source,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    encode_event,
)
from shared.registry_api import ModelVersion
from shared.supervision import Supervisor
from tests.fixtures import consumer_record, credit_examples, credit_schema
from tests.unit.trainer.helpers import (
    FakePublisher,
    FakeRegistry,
    fed,
    run_one,
    settings,
    wait_for,
)


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
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, registry)
    trainer.champion_version = 1  # no cold start: only triggers may start a run
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(50):
        trainer.trigger(Trigger(kind="drift", event_id=f"d-{i}", correlation_id=f"d-{i}", since=t0))
    for example in credit_examples(600):
        trainer.examples.add(example)
    run_one(trainer)
    assert len(trainer.runs) == 1 and trainer.runs[0].status == "completed"
    run = trainer.runs[0].trigger
    assert len(run.merged) == 49  # recorded, not lost
    assert sorted([run.event_id, *run.merged]) == sorted(f"d-{i}" for i in range(50))  # each once
    assert run.event_id == "d-49"  # the newest drift places the onset
    assert [t for t, _ in publisher.events] == ["training.started", "training.completed"]


def test_duplicate_examples_count_once(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    data = credit_examples(10)
    for example in data + data:
        trainer.examples.add(example)
    assert len(trainer.examples) == 10 and trainer.examples.duplicates == 10


def test_new_examples_trigger(tmp_path: Path) -> None:
    trainer = Trainer(
        settings(tmp_path, trainer_retrain_every=300), credit_schema(), FakePublisher(), FakeRegistry()
    )
    trainer.champion_version = 1
    trainer.active.set()
    for example in credit_examples(299):
        trainer.examples.add(example)
    assert trainer._ready() is None
    trainer.examples.add(credit_examples(300)[-1])
    ready = trainer._ready()
    assert ready is not None and ready.kind == "new_examples"


def test_schedule_trigger(tmp_path: Path) -> None:
    trainer = Trainer(
        settings(tmp_path, trainer_schedule_s=0.2), credit_schema(), FakePublisher(), FakeRegistry()
    )
    trainer.champion_version = 1
    for example in credit_examples(300):
        trainer.examples.add(example)
    report = run_one(trainer)
    assert report.trigger.kind == "schedule" and report.status == "completed"


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def envelope(payload: BaseModel) -> Envelope:
    return Envelope.decode(encode_event(payload, Source(service="test", instance="t"))[1])  # type: ignore[arg-type]


def drift(reference: int, name: str = "credit") -> Envelope:
    return envelope(
        DriftDetected(
            model_name=name,
            reference_version=reference,
            kind="concept",
            window_start=T0,
            window_end=T0,
            window_size=1,
            onset_time=T0,
            detector="test",
        )
    )


def ran(
    kind: type[TrainingStarted | TrainingCompleted | TrainingFailed], trigger: str, *merged: str
) -> Envelope:
    return envelope(
        kind(run_id="r", model_name="credit", trigger="drift", trigger_event_id=trigger, merged=list(merged))
    )


def taking_over(trainer: Trainer, tails: dict[str, list[Envelope]]) -> list[str | None]:
    return [t.event_id for t in trainer.take_over(lambda topic: tails.get(topic, []))]


def test_a_replica_taking_over_queues_the_drift_left_unanswered(tmp_path: Path) -> None:
    registry = FakeRegistry()
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), registry)
    trainer.champion_version = 3
    old, newest = drift(2), drift(3)
    assert taking_over(trainer, {topics.DRIFT: [old]}) == []  # about an older champion: answered
    assert taking_over(trainer, {topics.DRIFT: [drift(3, name="other")]}) == []  # another model
    assert taking_over(trainer, {topics.DRIFT: [old, newest]}) == [newest.event_id]


def test_a_replica_taking_over_skips_what_a_run_answered(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    trainer.champion_version = 3
    cut_off, merged, done = drift(3), drift(3), drift(3)
    started = ran(TrainingStarted, cut_off.event_id)  # started, never ended: not answered
    request, answered_request = (
        envelope(RunRequested(model_name="credit")),
        envelope(RunRequested(model_name="credit")),
    )
    tails = {
        topics.TRAINING: [started],
        topics.DRIFT: [cut_off],
        topics.TRAINER_CONTROL: [request, answered_request],
    }
    assert taking_over(trainer, tails) == [cut_off.event_id] * 3  # the requests merged into it
    assert trainer._pending is not None and trainer._pending.merged == [
        request.event_id,
        answered_request.event_id,
    ]

    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    trainer.champion_version = 3
    tails[topics.TRAINING] = [
        ran(TrainingCompleted, cut_off.event_id, answered_request.event_id),
        ran(TrainingFailed, done.event_id, merged.event_id),
    ]
    tails[topics.DRIFT] = [cut_off, merged, done]
    assert taking_over(trainer, tails) == []  # each drift and the request answered by a run


def test_a_request_older_than_the_training_tail_counts_as_answered(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    older = envelope(RunRequested(model_name="credit"))
    tails = {topics.TRAINING: [ran(TrainingCompleted, "another")]}
    newer = envelope(RunRequested(model_name="credit"))
    tails[topics.TRAINER_CONTROL] = [older, newer]
    assert taking_over(trainer, tails) == [newer.event_id]


def message(topic: str, event: Envelope) -> ConsumerRecord:
    return consumer_record(topic, event.model_dump_json().encode(), key=b"credit")


def test_a_drift_read_again_after_a_run_answered_it_starts_nothing(tmp_path: Path) -> None:
    publisher = FakePublisher()
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, FakeRegistry())
    trainer.champion_version = 3
    answered, stale = drift(3), drift(2)
    trainer._mark_answered([answered.event_id])
    trainer.handle([message(topics.DRIFT, answered), message(topics.DRIFT, stale)])
    assert trainer._pending is None
    fresh = drift(3)
    trainer.handle([message(topics.DRIFT, fresh)])
    assert trainer._pending is not None and trainer._pending.event_id == fresh.event_id


def test_an_alarm_about_the_champion_a_run_just_replaced_starts_nothing(tmp_path: Path) -> None:
    registry = FakeRegistry(promotes=True)
    registry.uploads.append((b"v1", None))  # type: ignore[arg-type]  # the champion, v1
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), registry)
    trainer.champion_version = 1
    for example in credit_examples(900):
        trainer.examples.add(example)
    first = drift(1)
    report = run_one(trainer, Trigger.for_drift(first, first.parsed()))  # type: ignore[arg-type]
    assert report.status == "completed" and report.aliases == ["champion"]
    assert trainer.champion_version == 1 + 1  # from the registry's answer, before any models event
    trainer.handle([message(topics.DRIFT, drift(1))])  # another worker, still on v1
    assert trainer._pending is None


def test_a_standby_runs_nothing_and_a_replica_letting_go_finishes_its_run_first(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    for example in credit_examples(900):
        trainer.examples.add(example)
    assert trainer._ready() is None  # cold start due, but a standby does not run it
    trainer.active.set()
    assert trainer._ready() is not None
    trainer._running = Trigger(kind="manual")
    trainer.active.clear()
    done = threading.Thread(target=trainer.step_down)
    done.start()
    done.join(0.5)
    assert done.is_alive()  # waits for the run
    with trainer._wake:
        trainer._running = None
    done.join(5)
    assert not done.is_alive() and trainer._pending is None


def test_drift_triggers_during_a_run_about_the_same_champion_join_that_run(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
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


@pytest.mark.parametrize("refused", [TrainingStarted, TrainingCompleted])
def test_a_run_event_kafka_did_not_take_is_sent_after_the_worker_restarts(
    tmp_path: Path, refused: type
) -> None:
    # training.started is sent without waiting (the run does not wait for the broker): its
    # acknowledgement is awaited before the run's next event, which follows it, never overtakes it
    publisher = FakePublisher()
    publisher.refuse = [refused]  # the producer times out on this event
    trainer = Trainer(settings(tmp_path), credit_schema(), publisher, FakeRegistry())
    trainer.champion_version = 1
    for example in credit_examples(400):
        trainer.examples.add(example)
    trainer.prepare()
    trainer.active.set()
    supervisor = Supervisor("trainer", backoff_s=2.0)  # long enough for the test to see it down
    supervisor.add(trainer)
    health = TestClient(build_app(trainer, lambda: True, lambda token: None, supervisor))
    trainer.trigger(Trigger(kind="manual"))
    supervisor.start()
    try:
        wait_for(lambda: supervisor.down() == ["trainer-worker"], "the failed send to stop the worker")
        response = health.get("/healthz")
        assert response.status_code == 503 and response.json()["down"] == ["trainer-worker"]
        assert "KafkaTimeoutError" in response.json()["tasks"]["trainer-worker"]["last_error"]
        wait_for(
            lambda: [t for t, _ in publisher.events] == ["training.started", "training.completed"],
            "the event",
        )
        wait_for(lambda: health.get("/healthz").status_code == 200, "readiness again")
        assert len(trainer.runs) == 1 and not trainer.unsent  # sent once the worker was back; no second run
        retried = 0 if refused is TrainingStarted else 1
        assert (
            len(publisher.ids) == 3 and publisher.ids[retried] == publisher.ids[retried + 1]
        )  # the same event
    finally:
        supervisor.stop(timeout_s=30)


def test_answered_triggers_are_remembered_up_to_a_bound(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    trainer._mark_answered([f"t-{i}" for i in range(ANSWERED_KEPT + 5)])
    assert (
        len(trainer.answered) == ANSWERED_KEPT and "t-4" not in trainer.answered and "t-5" in trainer.answered
    )


# --- progressive retraining ------------------------------------------------------------------


class PromotingRegistry(FakeRegistry):
    """Policy `auto`: every upload becomes the champion, and its artifact is handed out to be
    compared with."""

    def __init__(self) -> None:
        super().__init__(promotes=True)

    def alias(self, name: str, alias: str = "champion") -> ModelVersion | None:
        return self.versions(name)[-1] if self.uploads else None

    def versions(self, name: str) -> list[ModelVersion]:
        return [
            ModelVersion(
                **metadata.model_dump(),
                name=name,
                version=number,
                created_at=datetime.now(UTC),
                aliases=["champion"] if number == len(self.uploads) else [],
            )
            for number, (_, metadata) in enumerate(self.uploads, start=1)
        ]

    def artifact(self, name: str, version: ModelVersion) -> bytes:
        return self.uploads[version.version - 1][0]


def flipped(examples: list[Example]) -> list[Example]:
    """The other concept: every label the other way."""
    return [e.model_copy(update={"label": "no" if e.label == "yes" else "yes"}) for e in examples]


def test_a_drift_is_answered_by_a_small_candidate_then_refreshes_at_each_doubling(tmp_path: Path) -> None:
    registry = PromotingRegistry()
    trainer = Trainer(
        settings(
            tmp_path,
            trainer_min_examples=300,  # the cold start sees every example of its batch
            trainer_min_post_drift=100,
            trainer_refresh_factor=2,
            trainer_max_examples=500,
            trainer_refresh_first_model=True,
        ),
        credit_schema(),
        FakePublisher(),
        registry,
    )
    onset = T0 + timedelta(days=1)
    after = [
        e.model_copy(update={"record_id": f"after-{i}"})
        for i, e in enumerate(credit_examples(600, seed=2, start=onset))
    ]
    with fed(trainer) as feed:
        feed(flipped(credit_examples(300, seed=1, start=T0)), runs=1)  # the first model
        trainer.trigger(
            Trigger(kind="drift", event_id="d-1", correlation_id="d-1", since=onset, reference_version=1)
        )
        feed(after[:100], runs=2)  # the first candidate, from 100 post-drift examples
        feed(after[100:200], runs=3)  # refreshed when they double...
        feed(after[200:400], runs=4)
        feed(after[400:500], runs=5)  # ...until the window (500) is all post-drift
        assert trainer._episode is None  # nothing left to refresh

    runs = trainer.runs
    assert [(r.trigger.kind, r.rows) for r in runs] == [
        ("cold_start", 300),
        ("drift", 100),
        ("refresh", 200),
        ("refresh", 400),
        ("refresh", 500),
    ]
    assert all(r.trigger.correlation_id == "d-1" for r in runs[1:])  # traced to the drift
    assert [r.trigger.event_id for r in runs[2:]] == [None] * 3  # answering no trigger again
    gates = [{g.name: g for g in r.gate_report.gates} for r in runs[1:] if r.gate_report]
    # The champion is judged on the candidate's holdout, the newest post-drift examples: the
    # model of the old concept gets most of them wrong, so a small candidate replaces it.
    first = gates[0]["beats_champion"]
    assert runs[1].status == "completed" and first.threshold is not None and first.threshold < 0.4
    for gate in gates[1:]:  # a refresh must do at least as well as the model it replaces
        beats = gate["beats_champion"]
        assert abs(beats.threshold - float(beats.detail.split()[1])) < 1e-4  # no tolerance


def recurring_trainer(tmp_path: Path, registry: PromotingRegistry, **overrides: object) -> Trainer:
    """A trainer for concepts that come back: one model of 500 examples first, no refreshes."""
    return Trainer(
        settings(
            tmp_path,
            trainer_min_examples=500,
            trainer_refresh_factor=0,
            trainer_max_examples=500,
            **overrides,
        ),
        credit_schema(),
        FakePublisher(),
        registry,
    )


def renamed(examples: list[Example], prefix: str) -> list[Example]:
    return [e.model_copy(update={"record_id": f"{prefix}-{i}"}) for i, e in enumerate(examples)]


def test_a_concept_that_returns_brings_back_the_model_of_its_earlier_episode(tmp_path: Path) -> None:
    registry = PromotingRegistry()
    # a fresh fit on 45 examples, a holdout of 15; no recall before the fit
    trainer = recurring_trainer(tmp_path, registry, trainer_min_post_drift=60, trainer_recall_at_alarm=0)
    second, third = T0 + timedelta(days=1), T0 + timedelta(days=2)

    with fed(trainer) as feed:
        feed(credit_examples(500, seed=1, start=T0), runs=1)  # v1: concept A
        trainer.trigger(Trigger(kind="drift", event_id="d-1", correlation_id="d-1", since=second))
        feed(renamed(flipped(credit_examples(60, seed=2, start=second)), "b"), runs=2)  # v2: B
        trainer.trigger(Trigger(kind="drift", event_id="d-2", correlation_id="d-2", since=third))
        feed(renamed(credit_examples(60, seed=3, start=third), "a"), runs=3)  # A again

    runs = trainer.runs
    assert [r.status for r in runs] == ["completed"] * 3, [r.reason for r in runs]
    assert runs[1].recalled_from is None  # B was never seen: nothing earlier knows it
    assert runs[2].recalled_from == 1 and runs[2].version == 3  # v3 registers v1 again
    artifact, metadata = registry.uploads[2]
    assert artifact == registry.uploads[0][0] and metadata.digest == registry.uploads[0][1].digest
    assert metadata.lineage.recalled_from == 1 and metadata.lineage.correlation_id == "d-2"
    # v1, scored on all 60 examples since the onset, did at least as well as the fresh fit on
    # its 15 (a tie goes to the model that learned from more), and passed the gates there
    beats = {g.name: g for g in runs[2].gate_report.gates}["beats_champion"]  # type: ignore[union-attr]
    assert beats.passed and beats.value is not None and beats.threshold is not None
    assert beats.value > beats.threshold + 0.5  # B's model gets A's labels wrong


def test_a_concept_that_returns_is_brought_back_at_the_alarm_before_any_fit(tmp_path: Path) -> None:
    registry = PromotingRegistry()
    trainer = recurring_trainer(tmp_path, registry, trainer_min_post_drift=100, trainer_recall_at_alarm=40)
    second, third = T0 + timedelta(days=1), T0 + timedelta(days=2)

    with fed(trainer) as feed:
        feed(credit_examples(500, seed=1, start=T0), runs=1)  # v1: concept A
        trainer.trigger(Trigger(kind="drift", event_id="d-1", correlation_id="d-1", since=second))
        # B was never seen: the recall at 40 examples finds nothing, the drift waits for its fit
        feed(renamed(flipped(credit_examples(100, seed=2, start=second)), "b"), runs=2)  # v2: B
        trainer.trigger(Trigger(kind="drift", event_id="d-2", correlation_id="d-2", since=third))
        feed(renamed(credit_examples(45, seed=3, start=third), "a"), runs=3)  # A again, 45 labels

    runs = trainer.runs
    assert [r.status for r in runs] == ["completed"] * 3, [r.reason for r in runs]
    assert runs[1].recalled_from is None and runs[1].rows == 100  # a fresh fit on B
    assert runs[2].recalled_from == 1 and runs[2].version == 3  # v1 again, at the alarm
    assert runs[2].rows == 45 and "fit" not in runs[2].phases_ms  # before any fit, on 45 labels
    artifact, metadata = registry.uploads[2]
    assert artifact == registry.uploads[0][0] and metadata.digest == registry.uploads[0][1].digest
    assert metadata.lineage.recalled_from == 1 and metadata.lineage.correlation_id == "d-2"
    # the monitor keeps watching it against the profile of the episode that trained it
    assert metadata.reference_profile == registry.uploads[0][1].reference_profile
    gates = {g.name: g for g in runs[2].gate_report.gates}  # type: ignore[union-attr]
    assert gates["beats_champion"].passed and gates["min_accuracy"].value > 0.8  # type: ignore[operator]
    assert metadata.metrics["holdout_rows"] == 45  # every example since the onset judged it


def test_a_recall_at_the_alarm_that_fails_loses_no_drift(tmp_path: Path) -> None:
    registry = PromotingRegistry()
    trainer = recurring_trainer(tmp_path, registry, trainer_min_post_drift=100, trainer_recall_at_alarm=40)
    attempts = []

    def broken() -> list[object]:  # once, at the alarm; the fit's own recall finds nothing
        attempts.append(len(trainer.examples))
        if len(attempts) == 1:
            raise RuntimeError("the registry answered nonsense")
        return []

    trainer._earlier = broken  # type: ignore[method-assign]
    second = T0 + timedelta(days=1)
    with fed(trainer) as feed:
        feed(credit_examples(500, seed=1, start=T0), runs=1)
        trainer.trigger(Trigger(kind="drift", event_id="d-1", correlation_id="d-1", since=second))
        feed(renamed(flipped(credit_examples(45, seed=2, start=second)), "b"), runs=1)
        wait_for(lambda: bool(attempts), "the recall at the alarm")
        feed(renamed(flipped(credit_examples(100, seed=2, start=second)), "c"), runs=2)
    assert attempts and trainer.runs[1].trigger.event_id == "d-1"  # answered by its fit
    assert trainer.runs[1].status == "completed" and trainer.runs[1].recalled_from is None


def test_a_refresh_is_held_while_the_champions_errors_rise(tmp_path: Path) -> None:
    from services.trainer.service import _Episode

    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    trainer.champion_version = 1
    trainer.active.set()
    rng = random.Random(3)
    for i, example in enumerate(credit_examples(600)):
        right = rng.random() < (0.93 if i < 400 else 0.5)  # the champion's errors rise at 400
        wrong = "no" if example.label == "yes" else "yes"
        trainer.examples.add(example.model_copy(update={"prediction": example.label if right else wrong}))
    trainer._episode = _Episode(since=None, next_rows=600, correlation_id="c")
    assert trainer._ready() is None  # a drift the monitor will report: no refresh mixes it in
    assert trainer._episode is not None and trainer._episode.next_rows == 1200  # this size skipped

    steady = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    steady.champion_version = 1
    steady.active.set()
    for example in credit_examples(600):
        steady.examples.add(example.model_copy(update={"prediction": example.label}))
    steady._episode = _Episode(since=None, next_rows=600, correlation_id="c")
    ready = steady._ready()
    assert ready is not None and ready.kind == "refresh" and ready.min_rows == 600
