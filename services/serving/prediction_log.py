"""Logs predictions to `predictions` off the request path: bounded, never blocking, and
counting what it had to drop when Kafka could not keep up.

A request hands over its scored rows as one `Scored` batch; the events are built and sent on
the log's own thread, so a request pays only for a queue put.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter

from shared import topics
from shared.events import Prediction
from shared.kafka import EventPublisher
from shared.schema import LabelValue
from shared.validation import Row

log = logging.getLogger(__name__)

LOGGED = Counter("ctloop_serving_predictions_logged_total", "Predictions handed to Kafka")
DROPPED = Counter("ctloop_serving_prediction_log_dropped_total", "Predictions not logged (buffer full)")


@dataclass(frozen=True)
class ScoredRows:
    """One model's predictions for one request (or one shadow-scored request)."""

    model_name: str
    model_version: int
    shadow: bool
    at: datetime
    ids: list[str]
    rows: list[Row]
    classes: list[LabelValue]
    probabilities: list[dict[str, float]]
    prediction_ids: list[str]

    def predictions(self) -> Iterator[tuple[str, dict[str, object]]]:
        """Each row's record id and `Prediction` payload, as its fields (already validated)."""
        for p, i, row, c, pr in zip(
            self.prediction_ids, self.ids, self.rows, self.classes, self.probabilities, strict=True
        ):
            yield (
                i,
                {
                    "prediction_id": p,
                    "record_id": i,
                    "model_name": self.model_name,
                    "model_version": self.model_version,
                    "features": row,
                    "prediction": c,
                    "probabilities": pr,
                    "event_time": self.at,
                    "shadow": self.shadow,
                },
            )


class PredictionLog:
    """A supervised worker (`shared.supervision`) that sends what requests hand it."""

    name = "prediction-log"

    def __init__(self, publisher: EventPublisher, capacity: int) -> None:
        self.publisher = publisher
        self.capacity = capacity
        self._queue: queue.SimpleQueue[ScoredRows | None] = queue.SimpleQueue()
        self._waiting = 0  # predictions queued and not yet handed to Kafka
        self._lock = threading.Lock()

    def log(self, scored: ScoredRows) -> None:
        """Called by requests; returns at once, dropping (and counting) when the buffer is full."""
        count = len(scored.ids)
        with self._lock:
            if self._waiting + count > self.capacity:
                DROPPED.inc(count)
                return
            self._waiting += count
        self._queue.put(scored)

    def run(self) -> None:
        while (scored := self._queue.get()) is not None:
            with self._lock:
                self._waiting -= len(scored.ids)
            for record_id, fields in scored.predictions():
                try:
                    self.publisher.publish_validated(topics.PREDICTIONS, Prediction, fields, key=record_id)
                    LOGGED.inc()
                except Exception as exc:  # the producer's own buffer is full or it is closed
                    DROPPED.inc()
                    log.warning("prediction log: %s", exc)

    def stop(self) -> None:
        """Return once what is queued is sent (then flush the publisher)."""
        self._queue.put(None)
