"""The embedded broker: starts on a free port, topics get the configured partitions, a
paused broker keeps its data, and stop leaves no process behind."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from shared.broker import EmbeddedBroker
from shared.kafka import make_consumer
from shared.settings import CommonSettings
from shared.topics import ALL_TOPICS, PARTITIONS_OF, TRAINER_CONTROL, ensure_topics

pytestmark = pytest.mark.integration


def test_start_topics_pause_resume_stop() -> None:
    broker = EmbeddedBroker().start()
    try:
        assert sorted(ensure_topics(broker.bootstrap, partitions=4)) == sorted(ALL_TOPICS)
        assert ensure_topics(broker.bootstrap, partitions=4) == []  # idempotent
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        described = admin.describe_topics(list(ALL_TOPICS))
        admin.close()
        counts = {t["name"]: len(t["partitions"]) for t in described}
        assert counts == {topic: PARTITIONS_OF.get(topic, 4) for topic in ALL_TOPICS}
        assert counts[TRAINER_CONTROL] == 1  # what trainer replicas compete for

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        producer.send(ALL_TOPICS[0], b"before pause").get(timeout=30)
        broker.pause()
        broker.resume()
        producer.send(ALL_TOPICS[0], b"after resume").get(timeout=30)
        producer.close()
        seen: list[bytes] = []
        consumer = make_consumer(
            CommonSettings(kafka_bootstrap=broker.bootstrap), "broker-test", [ALL_TOPICS[0]]
        )
        for _ in range(60):
            for batch in consumer.poll(timeout_ms=500).values():
                seen.extend(m.value for m in batch)
            if len(seen) == 2:
                break
        consumer.close()
        assert sorted(seen) == [b"after resume", b"before pause"]
    finally:
        broker.stop()
    assert broker.process is not None and broker.process.poll() is not None
