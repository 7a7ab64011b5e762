"""Runs the trainer: consume examples, drift and model events; train on a worker; HTTP API."""

from __future__ import annotations

import logging

from shared import topics
from shared.http import serve
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer, make_replay_consumer, read_tail
from shared.logs import setup_logging
from shared.registry_client import RegistryClient
from shared.schema import load_schema
from shared.settings import TrainerSettings
from shared.sklearn_speedups import skip_absent_pandas
from shared.supervision import Supervisor

log = logging.getLogger(__name__)


def main() -> None:
    skip_absent_pandas()
    from services.trainer.app import build_app
    from services.trainer.service import Trainer

    settings = TrainerSettings()
    setup_logging("trainer", settings.log_level)
    settings.require_for("trainer")
    schema = load_schema(settings.schema_path)
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    registry = RegistryClient(settings.registry_url, settings.token("trainer"), verifier=settings.verifier())
    trainer = Trainer(settings, schema, EventPublisher(settings, "trainer"), registry)
    # NOTE: the example store lives in memory, so it is rebuilt from the tail of `examples` at
    # every start (that consumer commits nothing); drift and model events are consumed once,
    # by a group that commits.
    examples = ConsumeLoop(
        "consume-examples",
        lambda: make_replay_consumer(settings, topics.EXAMPLES, settings.trainer_max_examples),
        trainer.handle,
        trainer.publisher,
        settings,
    )
    events = ConsumeLoop(
        "consume-events",
        lambda: make_consumer(settings, "ctloop-trainer", [topics.DRIFT, topics.MODELS]),
        trainer.handle,
        trainer.publisher,
        settings,
    )
    trainer.prepare()
    try:
        trainer.resume_unresolved_drift(read_tail(settings, topics.DRIFT, keep=50))
    except Exception as exc:  # the broker is unreachable: the monitor will re-alarm later
        log.warning("could not look for a drift left unanswered: %s", exc)
    supervisor = Supervisor("trainer")
    for worker in (trainer, examples, events):
        supervisor.add(worker)
    supervisor.start()
    try:
        serve(
            build_app(trainer, lambda: examples.ready() and events.ready(), registry.role_of, supervisor),
            settings.host,
            settings.trainer_port,
            settings.log_level,
        )
    finally:
        supervisor.stop(timeout_s=30)
