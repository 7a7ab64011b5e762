"""ctloop's partitioner maps every key exactly as kafka-python's default (and the Java client)."""

from __future__ import annotations

import random

from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2

from shared.partitioner import KeyPartitioner, murmur2


class _Cluster:
    """The two questions a partitioner asks of kafka-python's cluster metadata."""

    def __init__(self, topic: str, partitions: set[int]) -> None:
        self._topic, self._partitions = topic, partitions

    def topics(self) -> set[str]:
        return {self._topic}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._partitions) if topic == self._topic else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


def test_murmur2_equals_kafkas_for_every_tail_length() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 80))
        assert murmur2(data) == kafka_murmur2(data), data


def test_keys_land_on_the_default_partitioners_partition() -> None:
    rng = random.Random(11)
    ours, default = KeyPartitioner(), DefaultPartitioner()
    for partitions in ({0}, {0, 1, 2}, set(range(12)), {0, 2, 5}):  # the last: not 0..n-1
        cluster = _Cluster("t", partitions)
        for _ in range(500):
            key = f"r-{rng.getrandbits(64):x}".encode()
            assert ours.partition("t", None, key, None, None, cluster) == default.partition(
                "t", None, key, None, None, cluster
            )


def test_a_send_without_a_key_still_gets_a_partition() -> None:
    assert KeyPartitioner().partition("t", None, None, None, b"v", _Cluster("t", {0, 1})) in {0, 1}
