"""Runs the trainer: consume examples, drift and model events; train on a worker while this
replica is the active one (`leadership.py`); HTTP API."""

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
    from services.trainer.leadership import Leadership
    from services.trainer.service import Trainer

    settings = TrainerSettings()
    setup_logging("trainer", settings.log_level)
    settings.require_for("trainer")
    schema = load_schema(settings.schema_path)
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    registry = RegistryClient(settings.registry_url, settings.token("trainer"), verifier=settings.verifier())
    trainer = Trainer(settings, schema, EventPublisher(settings, "trainer"), registry)
    leadership = Leadership(
        trainer.active,
        on_gain=lambda: trainer.take_over(lambda topic: read_tail(settings, topic, keep=200)),
        on_loss=trainer.step_down,
    )
    control = leadership.consume_loop(settings, trainer.handle, trainer.publisher)
    # NOTE: the example store lives in memory, so it is rebuilt from the tail of `examples` at
    # every start (that consumer commits nothing); drift and model events are consumed once,
    # by a group that commits, and only while this replica is the active one.
    examples = ConsumeLoop(
        "consume-examples",
        lambda: make_replay_consumer(settings, topics.EXAMPLES, settings.trainer_max_examples, prompt=True),
        trainer.handle,
        trainer.publisher,
        settings,
    )
    events = ConsumeLoop(
        "consume-events",
        lambda: make_consumer(settings, "ctloop-trainer", [topics.DRIFT, topics.MODELS], prompt=True),
        trainer.handle,
        trainer.publisher,
        settings,
        while_set=trainer.active,
    )
    trainer.prepare()
    supervisor = Supervisor("trainer")
    for worker in (trainer, examples, control, events):
        supervisor.add(worker)
    supervisor.start()
    try:
        serve(
            build_app(
                trainer,
                # a standby is ready once its examples are: it answers reads and run requests
                lambda: examples.ready() and (events.ready() or not trainer.active.is_set()),
                registry.role_of,
                supervisor,
            ),
            settings.host,
            settings.trainer_port,
            settings.log_level,
        )
    finally:
        supervisor.stop(timeout_s=30)
