"""Logs predictions to `predictions` off the request path: bounded, never blocking, and
counting what it had to drop when Kafka could not keep up."""

from __future__ import annotations

import logging
import queue
import threading

from prometheus_client import Counter

from shared import topics
from shared.events import Prediction
from shared.kafka import EventPublisher

log = logging.getLogger(__name__)

LOGGED = Counter("ctloop_serving_predictions_logged_total", "Predictions handed to Kafka")
DROPPED = Counter("ctloop_serving_prediction_log_dropped_total", "Predictions not logged (buffer full)")


class PredictionLog(threading.Thread):
    def __init__(self, publisher: EventPublisher, capacity: int) -> None:
        super().__init__(name="prediction-log", daemon=True)
        self.publisher = publisher
        self._queue: queue.Queue[Prediction | None] = queue.Queue(maxsize=capacity)

    def log(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            try:
                self._queue.put_nowait(prediction)
            except queue.Full:
                DROPPED.inc()

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.publisher.publish(topics.PREDICTIONS, "prediction.made", item, key=item.record_id)
                LOGGED.inc()
            except Exception as exc:  # the producer's own buffer is full or it is closed
                DROPPED.inc()
                log.warning("prediction log: %s", exc)

    def stop(self) -> None:
        self._queue.put(None)
        self.join(5)
        self.publisher.flush(5)
