"""The monitor's faust app: its state, its agents (`agents.py`), its control-topic consumer
(`control.py`), its registry link and the HTTP task that serves `/healthz`, `/metrics` and
`GET /v1/drift/status`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiokafka
import faust
import uvicorn
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types.transports import TransportT
from prometheus_client import Gauge

from services.monitor import agents
from services.monitor.control import ControlFollower
from services.monitor.delivery import OneTaskDelivery
from services.monitor.join_store import JoinStore
from services.monitor.registry_link import FetchReference, RegistryLink
from services.monitor.state import MonitorState
from shared.http import create_app
from shared.kafka import EventPublisher, faust_broker_config
from shared.registry_api import PRODUCTION
from shared.registry_client import RegistryClient
from shared.schema import DatasetSchema
from shared.settings import ROLES, MonitorSettings
from shared.supervision import Supervisor
from shared.vocabulary import Alias

JOIN_WAITING = Gauge("ctloop_monitor_join_waiting", "Records, predictions and labels awaiting a partner")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside faust's event loop: faust owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _PromptConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    """faust's consumer thread, its fetch wait taken from the app (`MonitorApp.fetch_wait_ms`)."""

    def _create_worker_consumer(self, transport: faust_kafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # faust fixes the worker's fetch wait at 1,500 ms, and on Tansu a hop then took 466 ms
        # at the median (`kafka_loop_fetch_wait_ms`); aiokafka reads the value at start.
        consumer._fetch_max_wait_ms = self.app.fetch_wait_ms  # type: ignore[attr-defined]
        return consumer


class _PromptConsumer(OneTaskDelivery, faust_kafka.Consumer):
    """faust's aiokafka consumer, on the prompt thread, handing each message over with one
    task (`delivery.py`)."""

    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _PromptTransport(faust_kafka.Transport):
    """faust's aiokafka transport, with the prompt consumer (`MonitorApp._new_transport`)."""

    Consumer = _PromptConsumer


class MonitorApp(faust.App):
    """The faust app, with the state its agents feed (for tests and the HTTP task)."""

    monitor_state: MonitorState
    fetch_wait_ms = 1500
    """How long its consumer's fetches may wait for data (`kafka_loop_fetch_wait_ms`)."""

    def _new_transport(self) -> TransportT:
        return _PromptTransport(self.conf.broker_consumer, self)


def build(settings: MonitorSettings, schema: DatasetSchema) -> MonitorApp:
    # NOTE: a monitor of another environment is another consumer group: each reads every record
    group = (
        "ctloop-monitor"
        if settings.monitor_environment == PRODUCTION
        else f"ctloop-monitor-{settings.monitor_environment}"
    )
    app = MonitorApp(group, store="memory://", web_enabled=False, **faust_broker_config(settings))
    app.fetch_wait_ms = settings.kafka_loop_fetch_wait_ms
    state = app.monitor_state = MonitorState(settings, schema)
    joins = JoinStore(settings.monitor_join_ttl_s)
    JOIN_WAITING.set_function(lambda: len(joins))
    registry = RegistryClient(settings.registry_url, settings.token("monitor"))
    link = RegistryLink(
        registry,
        schema.name,
        lambda request, version: agents.apply_reference(state, request, version),
        settings.monitor_environment,
    )
    control = ControlFollower(state, link, EventPublisher(settings, "monitor"))
    control_loop = control.consume_loop(settings)
    supervisor = Supervisor("monitor")
    supervisor.add(link)
    supervisor.add(control_loop)
    agents.install(app, settings, schema, state, joins, link)

    @app.task
    async def start_background_work() -> None:
        """The registry link hands fetched references to this loop; the references of the
        current champion and challenger are its first requests. Stopped with the app."""
        link.loop = control.loop = asyncio.get_running_loop()
        supervisor.start()
        link.ask(FetchReference(Alias.CHAMPION, only_if_unset=True))
        link.ask(FetchReference(Alias.CHALLENGER, only_if_unset=True))
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(supervisor.stop)
            control.publisher.close()
            registry.close()

    @app.timer(interval=settings.monitor_reconcile_s, on_leader=False)
    async def reconcile_champion() -> None:
        link.ask(FetchReference(Alias.CHAMPION, only_if_changed=True))

    http = create_app(
        "ctloop monitor",
        health=lambda: {
            "ready": app.rebalancing is False
            and bool(app.consumer.assignment())
            and control_loop.ready()
            and not joins.replay_unfinished,
            "service": "monitor",
            "joins_replay_unfinished": sorted(joins.replay_unfinished),
            "registry_requests_pending": link.pending(),
        },
        supervisor=supervisor,
        max_body_bytes=settings.http_max_body_bytes,
        tokens={role: settings.token(role) for role in ROLES},
        guarded=[("GET", r"/v1/.*", ROLES, "reading drift")] if settings.token("reader") else (),
    )

    @http.get("/v1/drift/status", tags=["drift"])
    def drift_status() -> dict[str, object]:
        """The current verdict, the reference version, the error detector and the last
        windows' reports."""
        return state.status()

    server = _EmbeddedServer(
        uvicorn.Config(
            http,
            host=settings.host,
            port=settings.monitor_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )

    @app.task
    async def serve_http() -> None:
        await server.serve()

    return app
