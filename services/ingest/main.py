"""Runs ingest: the HTTP API and the consumer of the `raw` topic."""

from __future__ import annotations

from shared import topics
from shared.http import serve
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer, make_producer
from shared.logs import setup_logging
from shared.schema import load_schema
from shared.settings import IngestSettings
from shared.supervision import Supervisor


def main() -> None:
    from services.ingest.app import build_app
    from services.ingest.dedupe import RecentIds
    from services.ingest.intake import Intake
    from services.ingest.raw import RawHandler

    settings = IngestSettings()
    setup_logging("ingest", settings.log_level)
    settings.require_for("ingest")
    schema = load_schema(settings.schema_path)
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
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
    supervisor.start()
    try:
        serve(
            build_app(settings, schema, intake, loop.ready, supervisor),
            settings.host,
            settings.ingest_port,
            settings.log_level,
        )
    finally:
        supervisor.stop()
        intake.publisher.close()
