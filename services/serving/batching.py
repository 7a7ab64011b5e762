"""Adaptive micro-batching: concurrent prediction requests share one `predict` call.

Requests await their rows' results on the event loop (HTTP) or block a worker thread (gRPC);
a single worker thread takes the next request and, with it, every request already waiting for
the same model (up to `max_rows`), predicts them in one call (measured here: a 64-row predict
costs about as much as a one-row one), and settles the whole batch with one wake-up of each
waiting loop and of each waiting thread. Nothing waits on a timer: a request that arrives alone
is predicted at once, and under load batches form by themselves while the previous predict
runs. `max_rows=1` predicts each request alone, still off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import defaultdict
from concurrent import futures

from prometheus_client import Histogram

from services.serving.model import LoadedModel
from shared.http import Unavailable
from shared.schema import LabelValue
from shared.validation import Row

BATCH_ROWS = Histogram(
    "ctloop_serving_batch_rows", "Rows per model predict call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)

Result = tuple[list[LabelValue], list[dict[str, float]]]
_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[Result]] | futures.Future[Result]
"""A request on an event loop (settled through that loop), or a blocked thread's future."""
_Item = tuple[LoadedModel, list[Row], _Waiter]


class MicroBatcher:
    """A supervised worker (`shared.supervision`) that runs the predicts requests wait on."""

    name = "micro-batcher"

    def __init__(self, max_rows: int = 256) -> None:
        self.max_rows = max_rows
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._held: _Item | None = None  # taken from the queue but for another model
        self._closed = False  # stopped: what is queued from now on would never be predicted
        self._closing = threading.Lock()

    async def predict(self, model: LoadedModel, rows: list[Row]) -> Result:
        """Called on the event loop; resolves when this request's rows are predicted."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._enqueue((model, rows, (loop, future)))
        return await future

    def predict_blocking(self, model: LoadedModel, rows: list[Row]) -> Result:
        """Called from a worker thread (gRPC's): blocks it until this request's rows are
        predicted, with no event loop between it and the batcher."""
        future: futures.Future[Result] = futures.Future()
        self._enqueue((model, rows, future))
        return future.result()

    def _enqueue(self, item: _Item) -> None:
        with self._closing:
            if self._closed:
                raise Unavailable("serving is shutting down")
            self._queue.put(item)

    def _next(self) -> _Item | None:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        return self._queue.get()

    def run(self) -> None:
        while (first := self._next()) is not None:
            model, batch = first[0], [first]
            size = len(first[1])
            while size < self.max_rows and self._held is None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if item[0] is not model:
                    self._held = item  # another version (a swap happened): next batch
                    break
                batch.append(item)
                size += len(item[1])
            self._predict(model, batch, size)
        self._refuse_waiting()

    def _refuse_waiting(self) -> None:
        """Stopped: whatever is still queued is answered 503, and so is every later request (a
        gRPC worker may still be decoding one), so no caller waits for ever."""
        with self._closing:
            self._closed = True
        gone = Unavailable("serving is shutting down")
        left = [self._held] if self._held is not None else []
        self._held = None
        with contextlib.suppress(queue.Empty):
            while True:
                if (item := self._queue.get_nowait()) is not None:
                    left.append(item)
        if left:
            _settle_all([item[2] for item in left], [gone] * len(left))

    @staticmethod
    def _predict(model: LoadedModel, batch: list[_Item], size: int) -> None:
        BATCH_ROWS.observe(size)
        outcomes: list[Result | BaseException] = []
        try:
            classes, probabilities = model.predict([row for _, rows, _ in batch for row in rows])
        except Exception as exc:  # every request of the batch gets the error
            outcomes = [exc] * len(batch)
        else:
            start = 0
            for _, rows, _ in batch:
                end = start + len(rows)
                outcomes.append((classes[start:end], probabilities[start:end]))
                start = end
        _settle_all([waiter for _, _, waiter in batch], outcomes)

    def stop(self) -> None:
        self._queue.put(None)


def _settle_all(waiters: list[_Waiter], outcomes: list[Result | BaseException]) -> None:
    """Each waiter its outcome: a blocked thread's at once, a loop's requests together in one
    call on that loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], object]]] = defaultdict(list)
    for waiter, outcome in zip(waiters, outcomes, strict=True):
        if isinstance(waiter, futures.Future):
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        else:
            by_loop[waiter[0]].append((waiter[1], outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[tuple[asyncio.Future[Result], object]]) -> None:
    """On the event loop: hand each waiting request its result (or the batch's error)."""
    for future, outcome in outcomes:
        if future.cancelled():  # the client went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]
