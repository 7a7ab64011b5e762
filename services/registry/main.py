"""Runs the registry: the store, the artifact folder, the outbox relay and the HTTP API."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared.events import Source
from shared.http import serve
from shared.kafka import make_producer
from shared.logs import setup_logging
from shared.settings import RegistrySettings
from shared.signing import sign
from shared.supervision import Supervisor
from shared.topics import ensure_topics


def main() -> None:
    from services.registry.app import build_app
    from services.registry.artifacts import ArtifactStore
    from services.registry.metrics import AliasCollector
    from services.registry.migrate import migrate
    from services.registry.outbox import OutboxRelay
    from services.registry.store import RegistryStore

    settings = RegistrySettings()
    setup_logging("registry", settings.log_level)
    root = settings.data_dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    db_url = settings.registry_db_url or f"sqlite:///{(root / 'registry.db').resolve()}"
    store = RegistryStore(
        db_url,
        Source(service="registry", instance=settings.instance),
        signer=lambda digest: sign(settings.signing_key, digest),
    )
    migrate(store.engine)
    REGISTRY.register(AliasCollector(store))
    ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    supervisor = Supervisor("registry")
    supervisor.add(OutboxRelay(store, make_producer(settings), settings.registry_outbox_keep))
    supervisor.start()
    try:
        serve(
            build_app(
                settings,
                store,
                ArtifactStore(settings.registry_artifact_url or root / "artifacts"),
                supervisor,
            ),
            settings.host,
            settings.registry_port,
            settings.log_level,
        )
    finally:
        supervisor.stop()
