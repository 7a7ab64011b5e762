"""The monitor throughput benchmark's baseline: a bare faust agent that only parses the same
envelopes from `records` (no join, no windows, no tests) and reports its rate.

    python -m benchmarks.faust_bare worker    (env: CTLOOP_KAFKA_BOOTSTRAP, BENCH_EXPECT, BENCH_RESULT,
                                               BENCH_CONSUMER=faust|monitor)

BENCH_CONSUMER=monitor runs the same agent on the monitor's faust app (its consumer's one-task
hand-over of each message, `services/monitor/delivery.py`); the default is faust as shipped.

Writes its progress to the file BENCH_RESULT names (faust takes over stdout), one line
"seconds-since-the-first-message count cpu-seconds-of-the-process" every `STEP` messages up to
the BENCH_EXPECT-th, and exits.
"""

from __future__ import annotations

import os
import time

import faust

from services.monitor.app import MonitorApp
from shared import topics
from shared.events import Envelope
from shared.gc_tuning import MONITOR_YOUNG, tune_gc
from shared.kafka import faust_broker_config
from shared.settings import MonitorSettings

settings = MonitorSettings()
tune_gc(MONITOR_YOUNG)  # the monitor's own collector setting (services/monitor/main.py)
App = MonitorApp if os.environ.get("BENCH_CONSUMER") == "monitor" else faust.App
app = App(
    f"ctloop-bench-bare-{os.getpid()}", store="memory://", web_enabled=False, **faust_broker_config(settings)
)
records = app.topic(topics.RECORDS, key_serializer="raw", value_serializer="raw")
EXPECT = int(os.environ.get("BENCH_EXPECT", "0"))
STEP = 1000
seen = {"count": 0, "first": 0.0}
progress: list[str] = []


@app.agent(records)
async def parse(stream: faust.Stream) -> None:
    async for event in stream.events():
        Envelope.decode(event.value).parsed()
        seen["count"] += 1
        count = seen["count"]
        if count == 1:
            seen["first"] = time.perf_counter()
        if count == 1 or count % STEP == 0 or count == EXPECT:
            progress.append(f"{time.perf_counter() - seen['first']:.4f} {count} {time.process_time():.4f}\n")
        if count == EXPECT:
            with open(os.environ["BENCH_RESULT"], "w") as result:
                result.writelines(progress)
            os._exit(0)  # the measurement is done; no need for faust's orderly shutdown


if __name__ == "__main__":
    app.main()
