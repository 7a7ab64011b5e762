"""The monitor's faust consumer waits `kafka_loop_fetch_wait_ms` for data, not faust's fixed
1,500 ms (on Tansu a hop took 466 ms at the median with it)."""

from __future__ import annotations

import asyncio

from services.monitor.app import MonitorApp


def test_the_worker_consumer_fetches_with_the_loop_wait() -> None:
    async def created_wait() -> int:
        app = MonitorApp("fetch-wait", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
        app.fetch_wait_ms = 50
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(created_wait()) == 50
