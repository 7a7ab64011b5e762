"""Which trainer replica is the active one: the member of the consumer group
`ctloop-trainer-leader` that holds the one partition of `ctloop.trainer-control.v1`.

Every replica keeps its example store warm (each replays `examples`), but only the active one
runs: it alone reads drift and model events (group `ctloop-trainer`), evaluates the cold-start,
schedule and volume triggers, and receives the operators' run requests that the control topic
carries (any replica's `POST /v1/runs` writes one). When the active replica dies, the group
coordinator notices within the session timeout (`CTLOOP_KAFKA_SESSION_TIMEOUT_MS`) and gives
the partition to a standby, which takes over (`Trainer.take_over`): it asks the registry for
the champion and queues again what was asked for and not answered, as the tails of the drift,
control and training topics say.

Why a Kafka group rather than a PostgreSQL advisory lock: the trainer needs Kafka already and no
database; the group coordinator is the failure detector every consumer here already trusts;
and the committed offsets of `ctloop-trainer` pass to the new active replica with it.

A replica that loses the partition while alive (a rebalance: another replica joined or left)
lets go only once the run in progress has finished and its events are sent (the revoke
callback waits), and the group waits for it up to its rebalance timeout, which is the fit
timeout here: so two replicas never run at once.

NOTE: measured on the embedded broker (Tansu) with the 8 s default session timeout: after a
SIGKILL of the active replica a standby held the partition 11.2 s later (the session timeout
plus Tansu's ~4 s join delay).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Gauge

from shared import topics
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer
from shared.settings import TrainerSettings

log = logging.getLogger(__name__)

ACTIVE = Gauge(
    "ctloop_trainer_active", "1 while this trainer replica is the active one, 0 while it stands by"
)
LEADER_GROUP = "ctloop-trainer-leader"


class Leadership(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Tells the trainer when it becomes the active replica and when it stops being it."""

    def __init__(
        self, active: threading.Event, on_gain: Callable[[], object], on_loss: Callable[[], None]
    ) -> None:
        self.active = active
        self._on_gain = on_gain
        self._on_loss = on_loss

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned and not self.active.is_set():
            log.info("this replica is the active trainer now")
            try:
                self._on_gain()
            except Exception:  # e.g. the broker or registry away: run on what arrives from now on
                log.exception("taking over: could not look for unanswered triggers")
            self.active.set()
            ACTIVE.set(1)

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.active.is_set():
            self.active.clear()
            ACTIVE.set(0)
            self._on_loss()  # returns once the run in progress is over
            log.info("this replica stands by now")

    def consume_loop(
        self,
        settings: TrainerSettings,
        handler: Callable[[list[ConsumerRecord]], None],
        publisher: EventPublisher,
    ) -> ConsumeLoop:
        """The group membership, as a consume loop of the control topic's run requests."""
        return ConsumeLoop(
            "leadership",
            lambda: make_consumer(
                settings,
                LEADER_GROUP,
                [topics.TRAINER_CONTROL],
                listener=self,
                prompt=True,
                # the revoke callback waits for a run: the group must wait for it as long
                max_poll_interval_ms=int((settings.trainer_fit_timeout_s + 120) * 1000),
            ),
            handler,
            publisher,
            settings,
        )
