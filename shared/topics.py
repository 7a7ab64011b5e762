"""Topic names of the loop and their creation at start-up.

Names are versioned (`ctloop.<name>.v1`). Topics are created explicitly with the configured
partition count because Tansu auto-creates unknown topics with a count of its own choosing.
`raw` is the only topic that external producers write, and carries bare records, not
envelopes.
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

RAW = "ctloop.raw.v1"
RECORDS = "ctloop.records.v1"
LABELS = "ctloop.labels.v1"
DEADLETTER = "ctloop.deadletter.v1"
PREDICTIONS = "ctloop.predictions.v1"
EXAMPLES = "ctloop.examples.v1"
DRIFT = "ctloop.drift.v1"
TRAINING = "ctloop.training.v1"
MODELS = "ctloop.models.v1"
MONITORING = "ctloop.monitoring.v1"
"""The monitor's measurements (each tested window, live accuracy): history for the console."""

OUTCOMES = "ctloop.outcomes.v1"
"""The monitor's combination step: each worker joins its partitions' predictions and labels and
sends the outcomes here, keyed by model name, so that one worker judges a model's whole error
stream (a Page-Hinkley test over a third of the labels is slower to see a change)."""

TRAINER_CONTROL = "ctloop.trainer-control.v1"
"""Run requests for the active trainer; its one partition is what trainer replicas compete for
(`services/trainer/leadership.py`): the member of their group that holds it is the active one."""

ALL_TOPICS = (
    RAW,
    RECORDS,
    LABELS,
    DEADLETTER,
    PREDICTIONS,
    EXAMPLES,
    DRIFT,
    TRAINING,
    MODELS,
    MONITORING,
    OUTCOMES,
    TRAINER_CONTROL,
)
PARTITIONS_OF = {TRAINER_CONTROL: 1, OUTCOMES: 1}
"""Topics whose partition count is fixed by their role rather than configured."""


def ensure_topics(bootstrap: str, partitions: int, timeout_s: float = 60.0) -> list[str]:
    """Create every ctloop topic that does not exist yet; return the ones created.

    Retries until the broker answers or `timeout_s` passes, so it can run right after the
    broker process starts.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="ctloop-topics")
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker at {bootstrap} did not answer: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in ALL_TOPICS if t not in existing]
        created = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, PARTITIONS_OF.get(topic, partitions), 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another process created it first: the same end state
        if created:
            log.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()
