"""Runs the console: follows the loop's topics into its store and serves the pages."""

from __future__ import annotations

import httpx

from shared import topics
from shared.http import serve
from shared.kafka import ConsumeLoop, EventPublisher, make_consumer
from shared.logs import setup_logging
from shared.schema import load_schema
from shared.settings import ConsoleSettings
from shared.supervision import Supervisor


def main() -> None:
    from services.console.follower import FOLLOWED, Follower
    from services.console.pages import build_app
    from services.console.store import ConsoleStore

    settings = ConsoleSettings()
    setup_logging("console", settings.log_level)
    settings.require_for("console")  # nothing required; refuses retired variables
    schema = load_schema(settings.schema_path)
    topics.ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    root = settings.data_dir / "console"
    root.mkdir(parents=True, exist_ok=True)
    store = ConsoleStore(settings.console_db_url or f"sqlite:///{(root / 'console.db').resolve()}")
    follower = Follower(store, settings.console_dead_letters_keep)
    consume = ConsumeLoop(
        "follow-topics",
        lambda: make_consumer(settings, "ctloop-console", FOLLOWED),
        follower.handle,
        EventPublisher(settings, "console"),
        settings,
    )
    supervisor = Supervisor("console")
    supervisor.add(consume)
    supervisor.start()
    client = httpx.Client()
    try:
        serve(
            build_app(settings, schema, store, client, supervisor, consume.ready),
            settings.host,
            settings.console_port,
            settings.log_level,
        )
    finally:
        supervisor.stop(timeout_s=30)
        client.close()
        store.close()
