"""Micro-batching: concurrent requests share predict calls, each gets exactly its own rows'
results, whether they wait on an event loop (HTTP) or block a thread (gRPC), requests for
different versions are never mixed in one call, and none waits for ever once it stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.serving.batching import MicroBatcher
from shared.http import Unavailable
from shared.supervision import Supervisor


class _Model:
    """Echoes each row's `n` as its class; slow enough that requests pile up meanwhile."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[int] = []

    def predict(self, rows: list[dict[str, object]]) -> tuple[list[object], list[dict[str, float]]]:
        self.calls.append(len(rows))
        time.sleep(0.005)
        return [f"{self.tag}{r['n']}" for r in rows], [{"p": float(r["n"])} for r in rows]  # type: ignore[arg-type]


@pytest.fixture
def batcher() -> Iterator[MicroBatcher]:
    supervisor = Supervisor("test")
    batcher = supervisor.add(MicroBatcher(max_rows=64))
    supervisor.start()
    yield batcher
    supervisor.stop()


def test_concurrent_requests_share_calls_and_get_their_own_results(batcher: MicroBatcher) -> None:
    model = _Model("a")

    async def requests() -> list[object]:
        return await asyncio.gather(
            *(batcher.predict(model, [{"n": i}, {"n": i + 1000}]) for i in range(32))  # type: ignore[arg-type]
        )

    results = asyncio.run(requests())
    assert all(results[i] == ([f"a{i}", f"a{i + 1000}"], [{"p": i}, {"p": i + 1000}]) for i in range(32))
    assert sum(model.calls) == 64 and len(model.calls) < 32 and max(model.calls) <= 64


def test_versions_are_never_mixed(batcher: MicroBatcher) -> None:
    old, new = _Model("old"), _Model("new")

    async def requests() -> list[object]:
        return await asyncio.gather(
            *(batcher.predict(old if i % 2 else new, [{"n": i}]) for i in range(20))  # type: ignore[arg-type]
        )

    results = asyncio.run(requests())
    assert all(results[i][0] == [f"{'old' if i % 2 else 'new'}{i}"] for i in range(20))  # type: ignore[index]


def test_an_error_reaches_every_request_of_the_batch(batcher: MicroBatcher) -> None:
    class _Broken(_Model):
        def predict(self, rows: list[dict[str, object]]) -> tuple[list[object], list[dict[str, float]]]:
            time.sleep(0.005)
            raise ValueError("model exploded")

    async def requests() -> list[object]:
        return await asyncio.gather(
            *(batcher.predict(_Broken("x"), [{"n": i}]) for i in range(5)),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    results = asyncio.run(requests())
    assert all(isinstance(r, ValueError) and "exploded" in str(r) for r in results)


def test_a_cancelled_request_does_not_disturb_the_others(batcher: MicroBatcher) -> None:
    model = _Model("a")

    async def requests() -> list[object]:
        gone = asyncio.ensure_future(batcher.predict(model, [{"n": 0}]))  # type: ignore[arg-type]
        rest = [batcher.predict(model, [{"n": i}]) for i in range(1, 5)]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        gone.cancel()
        return await asyncio.gather(*rest)

    assert [r[0] for r in asyncio.run(requests())] == [[f"a{i}"] for i in range(1, 5)]  # type: ignore[index]


def test_blocked_threads_and_loop_requests_share_batches_and_get_their_own_results(
    batcher: MicroBatcher,
) -> None:
    # gRPC's worker threads wait on the batcher directly, beside HTTP's requests on a loop
    model = _Model("a")
    with ThreadPoolExecutor(16) as threads:
        blocked = [threads.submit(batcher.predict_blocking, model, [{"n": i}]) for i in range(16)]  # type: ignore[arg-type]

        async def requests() -> list[object]:
            return await asyncio.gather(
                *(batcher.predict(model, [{"n": i}]) for i in range(100, 116))  # type: ignore[arg-type]
            )

        on_loop = asyncio.run(requests())
        assert [f.result(timeout=30)[0] for f in blocked] == [[f"a{i}"] for i in range(16)]
    assert [r[0] for r in on_loop] == [[f"a{i}"] for i in range(100, 116)]  # type: ignore[index]
    assert sum(model.calls) == 32 and len(model.calls) < 32


def test_a_blocked_thread_gets_the_batch_error() -> None:
    supervisor = Supervisor("test")
    batcher = supervisor.add(MicroBatcher(max_rows=64))
    supervisor.start()
    try:

        class _Broken(_Model):
            def predict(self, rows: list[dict[str, object]]) -> tuple[list[object], list[dict[str, float]]]:
                raise ValueError("model exploded")

        with pytest.raises(ValueError, match="exploded"):
            batcher.predict_blocking(_Broken("x"), [{"n": 0}])  # type: ignore[arg-type]
    finally:
        supervisor.stop()


def test_requests_queued_after_the_batcher_stops_are_refused_not_left_waiting() -> None:
    batcher = MicroBatcher(max_rows=1)
    batcher.stop()  # the stop marker is queued first: the requests behind it are never predicted
    with ThreadPoolExecutor(2) as threads:
        late = [threads.submit(batcher.predict_blocking, _Model("a"), [{"n": i}]) for i in range(2)]  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while batcher._queue.qsize() < 3:
            assert time.monotonic() < deadline, "the requests never reached the queue"
            time.sleep(0.01)
        batcher.run()
        for future in late:
            with pytest.raises(Unavailable, match="shutting down"):
                future.result(timeout=30)
    with pytest.raises(Unavailable, match="shutting down"):  # a request after the stop
        batcher.predict_blocking(_Model("a"), [{"n": 9}])  # type: ignore[arg-type]
