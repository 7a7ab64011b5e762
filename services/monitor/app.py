"""The monitor's faust app: agents that feed `MonitorState` and send what it decides.

- `observe` reads `records`, `predictions` and `labels` (all keyed by record id, so a
  record's events land on the same partition) and joins them (`JoinStore`, rebuilt from these
  topics after a restart or rebalance): a record that arrives labelled, or a prediction or
  record whose late label arrives, becomes an `examples` event; a champion's prediction joined
  with its label feeds the error stream. Entries whose partner never comes expire after
  `monitor_join_ttl_s`.
- `follow_models` resets the reference when a new champion is promoted.
- an HTTP task serves `/healthz`, `/metrics` and `GET /v1/drift/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import faust
import httpx
import uvicorn
from faust.types import EventT
from prometheus_client import Gauge

from services.monitor.join import step
from services.monitor.join_store import JoinStore
from services.monitor.state import MonitorState, ShadowVerdict, Underperformance
from shared import topics
from shared.events import (
    BadEvent,
    DriftDetected,
    Envelope,
    Example,
    ModelChanged,
    Prediction,
    Source,
    TrainingEvent,
    dead_letter_of,
    encode_event,
)
from shared.http import create_app
from shared.kafka import CONSUMER_LAG, faust_broker_config, read_processed
from shared.registry_api import ModelVersion
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings

log = logging.getLogger(__name__)
JOINED = (topics.RECORDS, topics.PREDICTIONS, topics.LABELS)
JOIN_WAITING = Gauge("ctloop_monitor_join_waiting", "Records, predictions and labels awaiting a partner")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside faust's event loop: faust owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build(settings: MonitorSettings, schema: DatasetSchema) -> faust.App:
    app = faust.App(
        "ctloop-monitor",
        store="memory://",
        web_enabled=False,
        **faust_broker_config(settings),
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    inputs = app.topic(*JOINED, **raw)
    models = app.topic(topics.MODELS, **raw)
    training = app.topic(topics.TRAINING, **raw)
    examples_out = app.topic(topics.EXAMPLES, **raw)
    drift_out = app.topic(topics.DRIFT, **raw)
    deadletter = app.topic(topics.DEADLETTER, **raw)
    joins = JoinStore(settings.monitor_join_ttl_s)
    JOIN_WAITING.set_function(lambda: len(joins))
    state = MonitorState(settings, schema)
    source = Source(service="monitor", instance=settings.instance)
    app.monitor_state = state  # type: ignore[attr-defined]

    async def send_drift(drift: DriftDetected | None) -> None:
        if drift is None:
            return
        state.last_alarm_event_id, event = encode_event("drift.detected", drift, source)
        log.warning("drift detected (%s, %s): %s", drift.kind, drift.detector, _describe(drift))
        await drift_out.send(key=schema.name.encode(), value=event)

    async def send_example(example: Example, cause: Envelope) -> None:
        _, event = encode_event("example.labelled", example, source, cause=cause)
        await examples_out.send(key=example.record_id.encode(), value=event)

    async def dead_letter(event: EventT, reason: str) -> None:
        message = event.message
        _, letter = encode_event(
            "input.rejected",
            dead_letter_of(message.topic, reason, event.value, message.partition, message.offset),
            source,
        )
        await deadletter.send(key=message.topic.encode(), value=letter)

    async def valid_events(stream: faust.Stream) -> AsyncIterator[tuple[EventT, Envelope, Any]]:
        """Each event with its envelope and typed payload; the rest is dead-lettered with why."""
        async for event in stream.events():
            try:
                envelope = Envelope.decode(event.value)
                payload = envelope.parsed()
            except BadEvent as exc:
                await dead_letter(event, str(exc))
                continue
            yield event, envelope, payload

    @app.on_partitions_assigned.connect
    async def keep_assigned(sender: faust.App, assigned: set[Any], **_: Any) -> None:
        joins.keep_only({tp.partition for tp in assigned if tp.topic in JOINED})

    async def rebuild_joins(partition: int) -> None:
        """Replay what the group already processed of this partition within the time to
        live, so that the halves waiting before a restart or rebalance still meet."""
        started, since = time.monotonic(), time.time() - settings.monitor_join_ttl_s
        messages = await asyncio.to_thread(read_processed, settings, app.conf.id, JOINED, partition, since)
        for message in messages:
            at = message.timestamp / 1000
            if at < since:
                continue
            try:
                payload = Envelope.decode(message.value).parsed()
            except BadEvent:
                continue  # dead-lettered when it was first read
            key = (message.key or b"").decode()
            joins.put(partition, key, step(joins.get(partition, key), payload, key).entry, at)
        joins.mark_rebuilt(partition)
        log.info(
            "partition %d: %d waiting joins rebuilt from %d events in %.1fs",
            partition,
            joins.waiting(partition),
            len(messages),
            time.monotonic() - started,
        )

    @app.agent(inputs)
    async def observe(stream: faust.Stream) -> None:
        async for event, envelope, payload in valid_events(stream):
            partition = event.message.partition
            if joins.needs_rebuild(partition):
                await rebuild_joins(partition)
            record_id = (event.key or b"").decode()
            result = step(joins.get(partition, record_id), payload, record_id)
            source = (event.message.topic, event.message.partition, event.message.offset)
            if result.features is not None:
                await send_drift(state.observe_features(*result.features, source))
            champion = state.reference.version if state.reference else None
            if isinstance(payload, Prediction) and not payload.shadow and payload.model_version == champion:
                score = max(payload.probabilities.values(), default=0.0)
                await send_drift(
                    state.observe_prediction(payload.prediction, score, payload.event_time, source)
                )
            if result.example is not None:
                await send_example(result.example, envelope)
            if result.outcome is not None:
                version, correct, at = result.outcome
                if state.reference is not None and version == state.reference.version:
                    await send_drift(state.observe_outcome(correct, at))
                    await request_rollback(state.take_underperformance())
                    if result.shadow is not None and result.shadow[0] == state.challenger_version:
                        state.observe_shadow_pair(correct, result.shadow[1])
                        await request_promotion(state.take_shadow_verdict())
            now = time.time()
            joins.put(partition, record_id, result.entry, now)
            joins.expire(partition, now)

    async def request_promotion(verdict: ShadowVerdict | None) -> None:
        if verdict is None:
            return
        log.warning("%s; asking the registry to promote it", verdict.reason)
        await registry_write(
            f"/v1/models/{schema.name}/versions/{verdict.challenger_version}/promote",
            {"alias": "champion", "reason": verdict.reason[:200]},
        )

    async def registry_write(path: str, body: dict[str, object]) -> None:
        try:
            async with httpx.AsyncClient(base_url=settings.registry_url, timeout=10) as client:
                response = await client.post(
                    path, json=body, headers={"Authorization": f"Bearer {settings.registry_token}"}
                )
            if response.status_code >= 400:
                log.error("registry refused %s: %s %s", path, response.status_code, response.text[:200])
        except httpx.HTTPError as exc:
            log.error("registry unreachable for %s: %s", path, exc)

    async def request_rollback(finding: Underperformance | None) -> None:
        if finding is None or not settings.monitor_auto_rollback:
            return
        log.warning("%s; asking the registry to roll back", finding.reason)
        await registry_write(f"/v1/models/{schema.name}/rollback", {"reason": finding.reason[:200]})

    async def fetch_reference(version: int | None = None, alias: str = "champion") -> ModelVersion | None:
        path = f"/v1/models/{schema.name}/" + (f"versions/{version}" if version else f"aliases/{alias}")
        async with httpx.AsyncClient(base_url=settings.registry_url, timeout=10) as client:
            response = await client.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return ModelVersion.model_validate_json(response.content)

    @app.agent(models)
    async def follow_models(stream: faust.Stream) -> None:
        async for _, envelope, payload in valid_events(stream):
            if not (
                envelope.type == "model.promoted"
                and isinstance(payload, ModelChanged)
                and payload.model_name == schema.name
            ):
                continue
            if payload.alias == "challenger":
                state.set_challenger(payload.version)
                log.info(
                    "challenger v%d: comparing it with the champion on shadow predictions", payload.version
                )
            elif payload.alias == "champion":
                version = await fetch_reference(payload.version)
                if version is not None:
                    state.set_reference(version)
                    log.info("reference reset to champion v%d", version.version)

    @app.agent(training)
    async def follow_training(stream: faust.Stream) -> None:
        async for _, envelope, payload in valid_events(stream):
            if (
                envelope.type == "training.failed"
                and isinstance(payload, TrainingEvent)
                and state.training_failed(payload.trigger_event_id)
            ):
                log.info(
                    "the run for drift %s failed (%s): watching again",
                    payload.trigger_event_id,
                    payload.reason,
                )

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        # NOTE: faust's consumer knows each partition's end (highwater) and our position.
        consumer = app.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            last_read = consumer._read_offset.get(tp)  # faust's record of the last offset read
            if highwater is not None and last_read is not None:
                lag = max(0, highwater - last_read - 1)
                CONSUMER_LAG.labels("ctloop-monitor", tp.topic, str(tp.partition)).set(lag)

    @app.task
    async def load_champion_at_start() -> None:
        while state.reference is None:
            try:
                version = await fetch_reference()
                if version is not None and state.reference is None:
                    state.set_reference(version)
                    log.info("reference: champion v%d", version.version)
                challenger = await fetch_reference(alias="challenger")
                if challenger is not None and state.challenger_version is None:
                    state.set_challenger(challenger.version)
                return
            except httpx.HTTPError as exc:
                log.info("registry not reachable yet (%s)", exc)
                await app.sleep(2.0)

    http = create_app(
        "ctloop monitor",
        health=lambda: {
            "ready": app.rebalancing is False and bool(app.consumer.assignment()),
            "service": "monitor",
        },
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


def _describe(drift: DriftDetected) -> str:
    if drift.kind == "concept":
        return f"error rate {drift.error_rate:.2f} vs validation accuracy {drift.baseline_accuracy}"
    drifted = [f for f in drift.features if f.drifted]
    return ", ".join(f"{f.feature} {f.test}={f.statistic:.3g} p={f.p_value:.2g}" for f in drifted)
