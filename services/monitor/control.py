"""The monitor's control topics, `models` and `training`, read by every worker.

The data topics (`records`, `predictions`, `labels`) are shared out among the monitor's faust
workers by their consumer group, but every worker must learn of every promotion (to test its
windows against the new champion) and of every failed run (to watch again). So the control
topics are read by a consume loop of each worker's own (group `ctloop-monitor-<instance>`,
from the latest offset, as serving does), and each event is handed to faust's event loop,
where the monitor's state lives. A promotion made before that consumer was first assigned
(after the start-up fetch of the reference, but before the group join: seconds on Tansu) is
made up when it is assigned: the reference is asked for again then, and every
`monitor_reconcile_s`. NOTE: without the ask on assignment a staging monitor watched a
version promoted in that gap only 58 s later, at the next reconcile (test_environments).

NOTE: before this, one faust group read them too: `models` is keyed by model name (one
partition), so with 3 workers two never saw a promotion and kept testing against their
start-up reference (tests/integration/test_monitor_replicas.py shows every worker following).
"""

from __future__ import annotations

import asyncio
import logging

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from services.monitor.registry_link import FetchReference, RegistryLink
from services.monitor.state import MonitorState
from shared import topics
from shared.events import ModelPromoted, TrainingFailed
from shared.kafka import ConsumeLoop, EventPublisher, TryLater, decoded, make_consumer
from shared.settings import MonitorSettings

log = logging.getLogger(__name__)
HAND_OVER_TIMEOUT_S = 30.0


class _AskOnAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Asks the registry for the references whenever the control consumer is given its
    partitions (a promotion may have been made while it was not reading)."""

    def __init__(self, link: RegistryLink) -> None:
        self.link = link

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for slot in self.link.aliases:
            self.link.ask(FetchReference(slot, only_if_changed=True))

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to hand over: the consumer commits nothing it has not applied."""


class ControlFollower:
    """Applies `models` and `training` events to the state, on the state's event loop."""

    def __init__(self, state: MonitorState, link: RegistryLink, publisher: EventPublisher) -> None:
        self.state = state
        self.link = link
        self.publisher = publisher
        self.loop: asyncio.AbstractEventLoop | None = None
        """faust's event loop; set when the app starts (until then batches are held)."""

    def consume_loop(self, settings: MonitorSettings) -> ConsumeLoop:
        return ConsumeLoop(
            "consume-control",
            lambda: make_consumer(
                settings,
                f"ctloop-monitor-{settings.instance}",
                [topics.MODELS, topics.TRAINING],
                listener=_AskOnAssignment(self.link),
                prompt=True,
                auto_offset_reset="latest",
            ),
            self.handle,
            self.publisher,
            settings,
        )

    def handle(self, messages: list[ConsumerRecord]) -> None:
        if self.loop is None:
            raise TryLater("the monitor's event loop has not started yet")
        for _, _, payload in decoded(messages, self.publisher):
            if payload.model_name != self.state.schema.name:
                continue
            if isinstance(payload, ModelPromoted | TrainingFailed):
                asyncio.run_coroutine_threadsafe(self._apply(payload), self.loop).result(HAND_OVER_TIMEOUT_S)

    async def _apply(self, payload: ModelPromoted | TrainingFailed) -> None:
        if isinstance(payload, TrainingFailed):
            if self.state.training_failed(payload.trigger_event_id):
                log.info(
                    "the run for drift %s failed (%s): watching again",
                    payload.trigger_event_id,
                    payload.reason,
                )
        else:
            # the event is a hint: the registry's alias, asked now, says which version it is
            # (a forged or stale event cannot reset the reference to a version no alias names)
            for slot, alias in self.link.aliases.items():
                if payload.alias == alias:
                    self.link.ask(FetchReference(slot, only_if_changed=True))
