"""The monitor's hand-over of each fetched message to its agents' streams: faust's, for a
task per message instead of four.

faust's fetcher hands every message over as `wait_first(delivery, suspend_flow.wait())`, a race
that starts four tasks (the delivery, the flow's suspension, the consumer's stop and its crash)
and an `asyncio.wait` for each message, so that a delivery blocked on a full stream buffer is
abandoned when a rebalance stops the flow. `OneTaskDelivery` runs the delivery as one task and
cancels that task when the flow stops or the consumer stops: the same outcome, one task.

NOTE: the race was ~20% of a bare faust agent's CPU (py-spy --gil, 50,000 records); with this
the monitor went from 0.56x to 0.86-1.09x a bare faust agent per CPU-second on an AMD EPYC, and
from 0.67x to 0.93x on an Intel Xeon (benchmarks/RESULTS.md, "Monitor throughput").
"""

from __future__ import annotations

import asyncio
from typing import Any

from mode.services import WaitResults


class OneTaskDelivery:
    """Mixed into a faust consumer before faust's class (`class C(OneTaskDelivery, Consumer)`)."""

    loop: asyncio.AbstractEventLoop
    suspend_flow: Any
    """faust's event, set while the flow is stopped (a rebalance)."""
    _delivering: asyncio.Task[Any] | None = None
    """The hand-over under way, while it waits (on a full stream buffer)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # The consumer's only call with two coroutines and no timeout is the fetcher's
        # hand-over (faust-streaming 0.11 to 0.15); anything else is faust's own race.
        if len(coros) != 2 or timeout is not None:
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc, no-any-return]
        delivery, suspended = coros
        suspended.close()  # never awaited: `stop_flow` cancels the delivery instead
        if self.suspend_flow.is_set():
            # A rebalance is under way: not delivered. faust's race would deliver it when the
            # stream's buffer had room; either way, when the rebalance ends faust's recovery
            # seeks every stream partition back to its committed offset, and reads it again.
            delivery.close()
            return WaitResults([suspended], [None], False)
        task = self._delivering = self.loop.create_task(delivery)
        try:
            return WaitResults([delivery], [await task], False)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # The flow stopped while the delivery waited: the message is dropped, as
                # faust's race drops it (the partition is fetched again after the rebalance).
                return WaitResults([suspended], [None], False)
            raise  # the fetcher itself was cancelled (the consumer stops)
        finally:
            self._delivering = None
            task.cancel()  # a no-op once it finished; stops it if the fetcher was cancelled

    def stop_flow(self) -> None:
        super().stop_flow()  # type: ignore[misc]
        self._abandon_delivery()

    async def on_stop(self) -> None:
        self._abandon_delivery()
        await super().on_stop()  # type: ignore[misc]

    def _abandon_delivery(self) -> None:
        if self._delivering is not None:
            self._delivering.cancel()
