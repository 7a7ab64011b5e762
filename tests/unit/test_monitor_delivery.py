"""The monitor's consumer hands each fetched message over with one task (`delivery.py`), with
the outcomes of faust's four-task race: the delivery's result, or the delivery abandoned when
a rebalance stops the flow or the fetcher is cancelled. Exercised on the monitor's real faust
consumer (no broker needed: nothing here fetches)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from services.monitor.app import MonitorApp


def on_consumer(check: Callable[[object], Awaitable[None]]) -> None:
    async def run() -> None:
        app = MonitorApp("delivery", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
        await check(app.consumer)

    asyncio.run(run())


def test_a_delivery_that_does_not_wait_returns_its_result() -> None:
    async def check(consumer: object) -> None:
        async def deliver() -> str:
            return "delivered"

        results = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())  # type: ignore[attr-defined]
        assert results.results == ["delivered"] and not results.stopped
        assert consumer._delivering is None  # type: ignore[attr-defined]

    on_consumer(check)


def test_a_delivery_waiting_on_a_full_buffer_is_abandoned_when_the_flow_stops() -> None:
    async def check(consumer: object) -> None:
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        buffer.put_nowait(1)  # full: the next put waits, as on a stream buffer nobody reads
        handing_over = asyncio.ensure_future(
            consumer.wait_first(buffer.put(2), consumer.suspend_flow.wait())  # type: ignore[attr-defined]
        )
        await asyncio.sleep(0.05)
        assert not handing_over.done()
        consumer.stop_flow()  # type: ignore[attr-defined]  # what a rebalance does
        results = await asyncio.wait_for(handing_over, 5)
        assert results.results == [None] and not results.stopped
        assert buffer.qsize() == 1  # the message was not delivered

        # with the flow stopped, the next message is not delivered at all
        async def must_not_run() -> None:
            raise AssertionError("delivered while the flow is stopped")

        await consumer.wait_first(must_not_run(), consumer.suspend_flow.wait())  # type: ignore[attr-defined]
        consumer.resume_flow()  # type: ignore[attr-defined]

    on_consumer(check)


def test_cancelling_the_fetcher_cancels_its_delivery() -> None:
    async def check(consumer: object) -> None:
        started, abandoned = asyncio.Event(), asyncio.Event()

        async def deliver() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                abandoned.set()
                raise

        fetcher = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))  # type: ignore[attr-defined]
        await asyncio.wait_for(started.wait(), 5)
        fetcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetcher
        await asyncio.wait_for(abandoned.wait(), 5)

    on_consumer(check)


def test_other_waits_are_faust_own() -> None:
    async def check(consumer: object) -> None:
        async def quick() -> int:
            return 7

        results = await consumer.wait_first(quick(), timeout=5)  # type: ignore[attr-defined]
        assert results.results == [7]

    on_consumer(check)
