"""Runs the registry: the store, the artifact store, the outbox relay and the HTTP API."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from shared.events import Source
from shared.http import serve
from shared.kafka import EventPublisher, make_producer
from shared.logs import setup_logging
from shared.settings import RegistrySettings
from shared.supervision import Supervisor
from shared.topics import ensure_topics

log = logging.getLogger(__name__)


def main() -> None:
    from services.registry.after_rule import AfterRule
    from services.registry.app import build_app
    from services.registry.artifacts import open_artifacts
    from services.registry.environments import Environments
    from services.registry.evidence import EvidenceFollower
    from services.registry.metrics import AliasCollector
    from services.registry.migrate import migrate
    from services.registry.outbox import OutboxRelay
    from services.registry.store import RegistryStore

    settings = RegistrySettings()
    setup_logging("registry", settings.log_level)
    settings.require_for("registry")
    root = settings.data_dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    db_url = settings.registry_db_url or f"sqlite:///{(root / 'registry.db').resolve()}"
    store = RegistryStore(
        db_url,
        Source(service="registry", instance=settings.instance),
        signer=settings.signer(),
    )
    migrate(store.engine)
    if legacy := settings.legacy_signing_key.get_secret_value():
        resigned, kept = store.resign_legacy(legacy)
        log.warning(
            "re-signed %d versions signed with the retired HMAC key; %d did not verify under it "
            "and stay refused by every loader. Unset CTLOOP_LEGACY_SIGNING_KEY now.",
            resigned,
            kept,
        )
    REGISTRY.register(AliasCollector(store))
    ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
    supervisor = Supervisor("registry")
    supervisor.add(OutboxRelay(store, make_producer(settings), settings.registry_outbox_keep))
    environments = Environments.from_settings(settings)
    if environments.after_rules():
        supervisor.add(AfterRule(store, environments, settings.registry_environment_check_s))
    if environments.needs_evidence():
        supervisor.add(EvidenceFollower(store, EventPublisher(settings, "registry")).consume_loop(settings))
    supervisor.start()
    try:
        serve(
            build_app(
                settings,
                store,
                open_artifacts(settings.registry_artifact_url, store.engine, root / "artifacts"),
                supervisor,
            ),
            settings.host,
            settings.registry_port,
            settings.log_level,
        )
    finally:
        supervisor.stop()
