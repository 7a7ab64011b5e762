"""Follows the monitors' measurements (`quality.measured` on `monitoring`) and alarms
(`drift.detected` on `drift`) into the registry's `evidence` table: the labelled predictions
each version made in each environment, which an `after` rule with `after_labelled` waits for,
and the alarms raised while it served there, which hold it back. Each event counts once (keyed
by its id); the consumer group is the registry's, so replicas share the work.
"""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

from services.registry.store import RegistryStore
from shared import topics
from shared.events import DriftDetected, QualityMeasured
from shared.kafka import ConsumeLoop, EventPublisher, decoded, make_consumer
from shared.settings import RegistrySettings


class EvidenceFollower:
    def __init__(self, store: RegistryStore, publisher: EventPublisher) -> None:
        self.store = store
        self.publisher = publisher

    def handle(self, messages: list[ConsumerRecord]) -> None:
        for _, event, payload in decoded(messages, self.publisher):
            if isinstance(payload, QualityMeasured) and payload.labelled:
                self.store.add_evidence(
                    event.event_id,
                    payload.model_name,
                    payload.environment,
                    payload.model_version,
                    payload.labelled,
                    payload.correct,
                )
            elif isinstance(payload, DriftDetected) and payload.reference_version is not None:
                self.store.add_evidence(
                    event.event_id,
                    payload.model_name,
                    payload.environment,
                    payload.reference_version,
                    alarms=1,
                )

    def consume_loop(self, settings: RegistrySettings) -> ConsumeLoop:
        return ConsumeLoop(
            "consume-evidence",
            lambda: make_consumer(settings, "ctloop-registry", [topics.MONITORING, topics.DRIFT]),
            self.handle,
            self.publisher,
            settings,
        )
