"""The monitor throughput benchmark's baseline: a bare faust agent that only parses the same
envelopes from `records` (no join, no windows, no tests) and reports its rate.

    python -m benchmarks.faust_bare worker    (env: CTLOOP_KAFKA_BOOTSTRAP, BENCH_EXPECT, BENCH_RESULT)

Writes its rate in records/s (from the first message to the BENCH_EXPECT-th) to the file
BENCH_RESULT names (faust takes over stdout) and exits.
"""

from __future__ import annotations

import os
import time

import faust

from shared import topics
from shared.events import Envelope
from shared.kafka import faust_broker_config
from shared.settings import MonitorSettings

settings = MonitorSettings()
app = faust.App(
    f"ctloop-bench-bare-{os.getpid()}", store="memory://", web_enabled=False, **faust_broker_config(settings)
)
records = app.topic(topics.RECORDS, key_serializer="raw", value_serializer="raw")
EXPECT = int(os.environ.get("BENCH_EXPECT", "0"))
seen = {"count": 0, "first": 0.0}


@app.agent(records)
async def parse(stream: faust.Stream) -> None:
    async for event in stream.events():
        Envelope.decode(event.value).parsed()
        seen["count"] += 1
        if seen["count"] == 1:
            seen["first"] = time.perf_counter()
        if seen["count"] == EXPECT:
            rate = (EXPECT - 1) / (time.perf_counter() - seen["first"])
            with open(os.environ["BENCH_RESULT"], "w") as result:
                result.write(f"{rate:.1f}\n")
            os._exit(0)  # the measurement is done; no need for faust's orderly shutdown


if __name__ == "__main__":
    app.main()
