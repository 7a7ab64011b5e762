"""Shadow scoring: a share of requests is also scored by the challenger, off the request path.

The challenger's predictions are logged to `predictions` with `shadow: true` and the same
record ids, so the monitor can compare champion and challenger on the same labelled records.
The queue is bounded: when the challenger cannot keep up, requests are skipped (and counted),
never delayed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
from datetime import datetime

from prometheus_client import Counter

from services.serving.holder import ModelHolder
from services.serving.prediction_log import PredictionLog, ScoredRows
from shared.ids import new_id
from shared.schema import LabelValue
from shared.validation import Row

log = logging.getLogger(__name__)

SHADOW = Counter(
    "ctloop_serving_shadow_predictions_total",
    "Challenger predictions by agreement with the champion",
    ["agreement"],
)
SKIPPED = Counter("ctloop_serving_shadow_skipped_total", "Requests not shadowed because the queue was full")

Item = tuple[list[str], list[Row], list[LabelValue], datetime]


class ShadowScorer:
    """A supervised worker (`shared.supervision`) that scores offered requests with the
    challenger."""

    name = "shadow-scorer"

    def __init__(
        self, holder: ModelHolder, prediction_log: PredictionLog, fraction: float, capacity: int
    ) -> None:
        self.holder = holder
        self.prediction_log = prediction_log
        self.fraction = fraction
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=capacity)
        self._random = random.Random()

    def offer(self, ids: list[str], rows: list[Row], champion: list[LabelValue], at: datetime) -> None:
        """Called by the request after it has its answer; returns at once."""
        if self.holder.challenger is None or self._random.random() >= self.fraction:
            return
        try:
            self._queue.put_nowait((ids, rows, champion, at))
        except queue.Full:
            SKIPPED.inc()

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            challenger = self.holder.challenger
            if challenger is None:
                continue
            ids, rows, champion, at = item
            try:
                classes, probabilities = challenger.predict(rows)
            except Exception:
                log.exception("challenger v%d failed to score; skipped", challenger.number)
                continue
            for ours, theirs in zip(classes, champion, strict=True):
                SHADOW.labels("agree" if ours == theirs else "disagree").inc()
            self.prediction_log.log(
                ScoredRows(
                    model_name=challenger.schema.name,
                    model_version=challenger.number,
                    shadow=True,
                    at=at,
                    ids=ids,
                    rows=rows,
                    classes=classes,
                    probabilities=probabilities,
                    prediction_ids=[new_id() for _ in ids],
                )
            )

    def stop(self) -> None:
        # NOTE: never blocks: a full queue is emptied of requests not scored yet (they are
        # only shadow scores) so that the sentinel fits.
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
