"""Runs ingest: the HTTP API and the consumer of the `raw` topic, in one process or in
`CTLOOP_INGEST_WORKERS` processes sharing the port.

One process takes records at most as fast as one core runs Python (benchmarks/RESULTS.md,
"Ingest throughput": ~41-44 µs of CPU a record over HTTP). Several workers are uvicorn's: its
parent process binds the port, starts the workers (each a whole ingest: its own producer,
de-duplication window and member of the `raw` consumer group) and starts a worker again when
one dies. Their metrics are summed over the workers (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from shared import topics
from shared.gc_tuning import tune_gc
from shared.http import serve
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer, make_producer
from shared.logs import setup_logging
from shared.schema import load_schema
from shared.settings import IngestSettings
from shared.supervision import Supervisor


def build() -> FastAPI:
    """One ingest process's app, with its producer and `raw` consumer started (uvicorn calls
    this in each worker when there are several)."""
    from services.ingest.app import build_app
    from services.ingest.dedupe import RecentIds
    from services.ingest.intake import Intake
    from services.ingest.raw import RawHandler
    from services.supervisor import die_with_supervisor

    settings = IngestSettings()
    if settings.ingest_workers > 1:  # a worker: set up as `main` set up the parent
        die_with_supervisor()
        setup_logging("ingest", settings.log_level)
        tune_gc()
    schema = load_schema(settings.schema_path)
    recent = RecentIds(settings.ingest_dedupe_window_s, settings.ingest_dedupe_capacity)
    # NOTE: a send blocks while the producer lacks metadata; keep that short, the HTTP side
    # answers 503 rather than hang.
    producer = make_producer(settings, max_block_ms=5000)
    intake = Intake(
        schema, EventPublisher(settings, "ingest", producer), recent, settings.ingest_max_unsettled
    )
    loop = ConsumeLoop(
        "consume-raw",
        lambda: make_consumer(settings, "ctloop-ingest", [topics.RAW]),
        RawHandler(intake, settings.ingest_max_body_bytes),
        intake.publisher,
        settings,
    )
    supervisor = Supervisor("ingest")
    supervisor.add(loop)

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        supervisor.start()
        try:
            yield
        finally:
            supervisor.stop()
            intake.publisher.close()

    return build_app(settings, schema, intake, loop.ready, supervisor, lifespan=running)


def main() -> None:
    from services.supervisor import SUPERVISOR_PID

    settings = IngestSettings()
    setup_logging("ingest", settings.log_level)
    settings.require_for("ingest")
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    if settings.ingest_workers == 1:
        serve(build(), settings.host, settings.ingest_port, settings.log_level)
        return
    metrics = tempfile.mkdtemp(prefix="ctloop-ingest-metrics-")
    # The workers inherit these: their metrics are files here, and they end with this process.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    os.environ[SUPERVISOR_PID] = str(os.getpid())
    try:
        uvicorn.run(
            "services.ingest.main:build",
            factory=True,
            workers=settings.ingest_workers,
            host=settings.host,
            port=settings.ingest_port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        shutil.rmtree(metrics, ignore_errors=True)
