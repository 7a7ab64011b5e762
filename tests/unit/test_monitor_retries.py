"""The monitor's safety net around each event: bounded retries for an error the event causes,
no bound for a cause outside it (`TryLater`), and the error handed back when it gives up."""

from __future__ import annotations

import asyncio

from services.monitor.agents import retried
from shared.kafka import TryLater


def _failing(errors: list[Exception], calls: list[int]):  # type: ignore[no-untyped-def]
    async def work() -> None:
        calls.append(1)
        if errors:
            raise errors.pop(0)

    return work


def test_an_error_that_persists_is_handed_back_after_the_attempts() -> None:
    calls: list[int] = []
    work = _failing([KeyError("x")] * 10, calls)
    error = asyncio.run(retried(work, attempts=3, backoff_s=0.001, where="records[0]@1"))
    assert isinstance(error, KeyError) and len(calls) == 3


def test_a_passing_error_is_retried_away() -> None:
    calls: list[int] = []
    work = _failing([ValueError("blip")], calls)
    assert asyncio.run(retried(work, attempts=3, backoff_s=0.001, where="w")) is None
    assert len(calls) == 2


def test_try_later_is_retried_past_the_attempts() -> None:
    calls: list[int] = []
    work = _failing([TryLater("replay cut off")] * 7, calls)
    assert asyncio.run(retried(work, attempts=2, backoff_s=0.001, where="w")) is None
    assert len(calls) == 8
