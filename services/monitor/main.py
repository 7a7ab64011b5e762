"""Runs the drift monitor as a faust worker (agents plus the HTTP task)."""

from __future__ import annotations

import gc

from shared.logs import setup_logging
from shared.schema import load_schema
from shared.settings import MonitorSettings
from shared.topics import ensure_topics


def main() -> None:
    import faust

    from services.monitor.app import build

    # NOTE: the monitor allocates a few objects per record and holds the join's waiting halves;
    # at the default threshold (700) the young generation was collected every few dozen records,
    # about 4 us of every record's ~25 us of the monitor's own work (benchmarks/RESULTS.md).
    gc.set_threshold(50_000, 20, 10)
    settings = MonitorSettings()
    setup_logging("monitor", settings.log_level)
    schema = load_schema(settings.schema_path)
    ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    app = build(settings, schema)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
