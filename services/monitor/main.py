"""Runs the drift monitor as a faust worker (agents plus the HTTP task)."""

from __future__ import annotations

from shared.gc_tuning import MONITOR_YOUNG, tune_gc
from shared.logs import setup_logging
from shared.schema import load_schema
from shared.settings import MonitorSettings
from shared.topics import ensure_topics


def main() -> None:
    import faust

    from services.monitor.app import build

    tune_gc(MONITOR_YOUNG)  # see there: the young generation at 700 cost ~4 us of ~25 us per record
    settings = MonitorSettings()
    setup_logging("monitor", settings.log_level)
    settings.require_for("monitor")
    schema = load_schema(settings.schema_path)
    ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    app = build(settings, schema)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
