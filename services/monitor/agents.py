"""The monitor's faust agents: they read the topics, feed `MonitorState`, and send what it
decides.

- `observe` reads `records`, `predictions` and `labels` (all keyed by record id, so a
  record's events land on the same partition) and joins them (`JoinStore`, rebuilt from these
  topics after a restart or rebalance): a record that arrives labelled, or a prediction or
  record whose late label arrives, becomes an `examples` event; a champion's prediction joined
  with its label becomes an `Outcome` on `outcomes`. Entries whose partner never comes expire
  after `monitor_join_ttl_s`.
- `judge` reads `outcomes` (one partition, keyed by model name: one worker of the group holds
  it) and feeds the error stream, so N workers make one concept-drift decision from all the
  labels, as one worker would; rollback and shadow verdicts come from there too.
- The control topics (`models`, `training`) are not read here but by every worker's own
  consume loop (`control.py`).
- Each tested window (drifted or not) and, every `monitor_quality_report_s`, the champion's
  live accuracy go to `monitoring`, the console's history.
- `report_lag` keeps the consumer-lag gauge current.
Registry calls go through `RegistryLink`, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT, StreamT
from prometheus_client import Counter

from services.monitor.join import step
from services.monitor.join_store import JoinStore
from services.monitor.registry_link import FetchReference, Promote, RegistryLink, Rollback
from services.monitor.state import MonitorState
from shared import topics
from shared.events import (
    BadEvent,
    DriftDetected,
    Envelope,
    Example,
    Outcome,
    Payload,
    Prediction,
    Source,
    dead_letter_of,
    encode_event,
)
from shared.kafka import CONSUMER_LAG, DEAD_LETTERS, TryLater, read_processed
from shared.registry_api import PRODUCTION, ModelVersion
from shared.schema import DatasetSchema
from shared.settings import MonitorSettings
from shared.validation import InvalidField, Label, Record, check_features, check_label
from shared.vocabulary import Alias, DriftKind

log = logging.getLogger(__name__)
PROCESSING_FAILED = Counter(
    "ctloop_monitor_events_dead_lettered_total", "Events the monitor failed on after its retries"
)
JOINED = (topics.RECORDS, topics.PREDICTIONS, topics.LABELS)
Joinable = Record | Prediction | Label
"""What the joined topics carry; another event there is dead-lettered."""


@dataclass
class Topics:
    inputs: faust.TopicT
    examples: faust.TopicT
    drift: faust.TopicT
    deadletter: faust.TopicT
    monitoring: faust.TopicT
    outcomes: faust.TopicT

    @classmethod
    def of(cls, app: faust.App) -> Topics:
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        return cls(
            inputs=app.topic(*JOINED, **raw),
            examples=app.topic(topics.EXAMPLES, **raw),
            drift=app.topic(topics.DRIFT, **raw),
            deadletter=app.topic(topics.DEADLETTER, **raw),
            monitoring=app.topic(topics.MONITORING, **raw),
            outcomes=app.topic(topics.OUTCOMES, **raw),
        )


def install(
    app: faust.App,
    settings: MonitorSettings,
    schema: DatasetSchema,
    state: MonitorState,
    joins: JoinStore,
    link: RegistryLink,
) -> None:
    """Add the monitor's agents, timer and start-up task to `app`."""
    out = Topics.of(app)
    source = Source(service="monitor", instance=settings.instance)

    async def send_drift(drift: DriftDetected | None) -> None:
        if drift is None:
            return
        event_id, event = encode_event(drift, source)
        state.alarm_sent(event_id)
        log.warning("drift detected (%s, %s): %s", drift.kind, drift.detector, describe(drift))
        await out.drift.send(key=schema.name.encode(), value=event)

    async def send_measurements() -> None:
        """The windows tested since the last call, for the console's history."""
        for tested in state.take_tested():
            _, event = encode_event(tested, source)
            await out.monitoring.send(key=schema.name.encode(), value=event)

    async def send_example(example: Example, cause: Envelope) -> None:
        _, event = encode_event(example, source, cause=cause)
        await out.examples.send(key=example.record_id.encode(), value=event)

    async def dead_letter(event: EventT[bytes], reason: str) -> None:
        message = event.message
        payload = dead_letter_of(message.topic, reason, event.value, message.partition, message.offset)
        _, letter = encode_event(payload, source)
        await out.deadletter.send(key=message.topic.encode(), value=letter)
        DEAD_LETTERS.labels("monitor", message.topic).inc()

    async def valid_events(stream: StreamT[bytes]) -> AsyncIterator[tuple[EventT[bytes], Envelope, Payload]]:
        """Each event with its envelope and typed payload; the rest is dead-lettered with why."""
        async for event in stream.events():
            try:
                envelope = Envelope.decode(event.value)
                payload = envelope.parsed()
            except BadEvent as exc:
                await dead_letter(event, str(exc))
                continue
            yield event, envelope, payload

    async def guarded(event: EventT[bytes], work: Callable[[], Awaitable[None]]) -> None:
        """Process one event; an event whose processing keeps failing is dead-lettered with
        the error. (Raised out of an agent, the error would make faust ack the event and move
        on: the event lost without a word.)"""
        message = event.message
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        attempts = settings.consumer_max_attempts
        error = await retried(work, attempts, settings.consumer_retry_backoff_s, where)
        if error is not None:
            PROCESSING_FAILED.inc()
            log.error("dead-lettering %s: %s: %s", where, type(error).__name__, error)
            reason = f"could not be processed ({attempts} attempts): {type(error).__name__}: {error}"
            await dead_letter(event, reason)

    def misfit(payload: Joinable) -> InvalidField | None:
        """Why a record, prediction or label does not fit the dataset schema, or None: it is
        dead-lettered, never fed to the windows (a numeric feature that is a string there
        would raise in every window test)."""
        try:
            if isinstance(payload, Label):
                check_label(schema, payload.label)
            else:
                check_features(schema, payload.features)
        except InvalidField as exc:
            return exc
        return None

    @app.on_partitions_assigned.connect
    def keep_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned: set[Any] = args[0]  # faust sends the assigned partitions positionally
        joins.keep_only({tp.partition for tp in assigned if tp.topic in JOINED})

    async def rebuild_joins(partition: int) -> None:
        """Replay what the group already processed of this partition within the time to
        live, so that the halves waiting before a restart or rebalance still meet."""
        started, since = time.monotonic(), time.time() - settings.monitor_join_ttl_s
        messages, complete = await asyncio.to_thread(
            read_processed, settings, app.conf.id, JOINED, partition, since
        )
        for message in messages:
            at = message.timestamp / 1000
            if at < since:
                continue
            try:
                payload = Envelope.decode(message.value).parsed()
            except BadEvent:
                continue  # dead-lettered when it was first read
            if not isinstance(payload, Joinable):
                continue
            key = (message.key or b"").decode()
            joins.put(partition, key, step(joins.get(partition, key), payload, key).entry, at)
        if not complete:
            joins.replay_unfinished.add(partition)
            # Not marked rebuilt: the broker is too slow to replay now, so the next event of
            # this partition tries again (what was read is kept; replaying it twice is harmless).
            raise TryLater(f"partition {partition}: the joins' replay did not finish in time")
        joins.mark_rebuilt(partition)
        log.info(
            "partition %d: %d waiting joins rebuilt from %d events in %.1fs",
            partition,
            joins.waiting(partition),
            len(messages),
            time.monotonic() - started,
        )

    @app.agent(out.inputs)
    async def observe(stream: StreamT[bytes]) -> None:
        async for event, envelope, payload in valid_events(stream):
            if not isinstance(payload, Joinable):
                await dead_letter(event, f"a {envelope.type} event does not belong on {event.message.topic}")
            elif (problem := misfit(payload)) is not None:
                await dead_letter(event, f"does not fit the dataset schema {schema.name!r}: {problem}")
            else:
                await guarded(event, functools.partial(observe_one, event, envelope, payload))

    async def observe_one(event: EventT[bytes], envelope: Envelope, payload: Joinable) -> None:
        partition = event.message.partition
        if joins.needs_rebuild(partition):
            await rebuild_joins(partition)
        record_id = (event.key or b"").decode()
        result = step(joins.get(partition, record_id), payload, record_id)
        origin = (event.message.topic, event.message.partition, event.message.offset)
        if result.features is not None:
            await send_drift(state.observe_features(*result.features, origin))
        champion = state.reference.version if state.reference else None
        if isinstance(payload, Prediction) and not payload.shadow and payload.model_version == champion:
            score = max(payload.probabilities.values(), default=0.0)
            await send_drift(state.observe_prediction(payload.prediction, score, payload.event_time, origin))
        await send_measurements()
        if result.example is not None and settings.monitor_environment == PRODUCTION:
            await send_example(result.example, envelope)  # one copy: production's monitor sends them
        if result.outcome is not None:
            version, correct, at = result.outcome
            if state.reference is not None and version == state.reference.version:
                challenger, challenger_correct = result.shadow or (None, None)
                outcome = Outcome(
                    model_name=schema.name,
                    model_version=version,
                    correct=correct,
                    event_time=at,
                    environment=settings.monitor_environment,
                    challenger_version=challenger,
                    challenger_correct=challenger_correct,
                )
                _, sent = encode_event(outcome, source, cause=envelope)
                await out.outcomes.send(key=schema.name.encode(), value=sent)
        now = time.time()
        joins.put(partition, record_id, result.entry, now)
        joins.expire(partition, now)

    @app.agent(out.outcomes)
    async def judge(stream: StreamT[bytes]) -> None:
        async for event, envelope, payload in valid_events(stream):
            if not isinstance(payload, Outcome):
                await dead_letter(event, f"a {envelope.type} event does not belong on {event.message.topic}")
            elif payload.environment == settings.monitor_environment and payload.model_name == schema.name:
                await guarded(event, functools.partial(judge_one, payload))

    async def judge_one(outcome: Outcome) -> None:
        if state.reference is None or outcome.model_version != state.reference.version:
            return  # joined before a swap this worker has already seen: not the champion's
        await send_drift(state.observe_outcome(outcome.correct, outcome.event_time))
        if (finding := state.take_underperformance()) and settings.monitor_auto_rollback:
            link.ask(Rollback(finding))
        if outcome.challenger_correct is not None and outcome.challenger_version == state.challenger_version:
            state.observe_shadow_pair(outcome.correct, outcome.challenger_correct)
            if verdict := state.take_shadow_verdict():
                link.ask(Promote(verdict))

    @app.timer(interval=max(1.0, settings.monitor_join_ttl_s / 4))
    async def expire_joins() -> None:
        # Entries also expire as events arrive on their partition; this catches idle ones.
        joins.expire_all(time.time())

    @app.timer(interval=settings.monitor_quality_report_s)
    async def report_quality() -> None:
        for measured in state.take_quality():
            _, event = encode_event(measured, source)
            await out.monitoring.send(key=schema.name.encode(), value=event)

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        # NOTE: faust's consumer knows each partition's end (highwater) and our position.
        consumer = app.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            # faust's record of the last offset read (not in its typed interface)
            last_read = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
            if highwater is not None and last_read is not None:
                lag = max(0, highwater - last_read - 1)
                CONSUMER_LAG.labels("ctloop-monitor", tp.topic, str(tp.partition)).set(lag)


async def retried(
    work: Callable[[], Awaitable[None]], attempts: int, backoff_s: float, where: str
) -> Exception | None:
    """Run `work` until it succeeds, waiting `backoff_s`, then twice as long each time (up to
    32x); None when it did, else the error it still raised on the last of `attempts`.
    `TryLater` (a cause outside the event, e.g. a replay the broker was too slow for) is
    retried without a bound."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await work()
            return None
        except Exception as exc:
            error = exc
        held = isinstance(error, TryLater)
        if not held and attempt >= attempts:
            return error
        bound = "" if held else f" of {attempts}"
        log.warning("%s failed (attempt %d%s): %s: %s", where, attempt, bound, type(error).__name__, error)
        await asyncio.sleep(backoff_s * 2 ** min(attempt - 1, 5))


def apply_reference(state: MonitorState, request: FetchReference, version: ModelVersion) -> None:
    """On the event loop: a version the registry link fetched becomes the reference or the
    challenger."""
    if request.alias == Alias.CHALLENGER:
        if request.only_if_changed and state.challenger_version == version.version:
            return  # the shadow pairs gathered so far stay
        if not (request.only_if_unset and state.challenger_version is not None):
            state.set_challenger(version.version)
            log.info("challenger v%d: comparing it with the champion on shadow predictions", version.version)
        return
    if request.only_if_unset and state.reference is not None:
        return
    if request.only_if_changed and state.reference is not None and state.reference.version == version.version:
        return
    state.set_reference(version)
    log.info("reference: champion v%d", version.version)


def describe(drift: DriftDetected) -> str:
    if drift.kind == DriftKind.CONCEPT:
        return f"error rate {drift.error_rate:.2f} vs validation accuracy {drift.baseline_accuracy}"
    if drift.kind == DriftKind.ESTIMATED_PERFORMANCE:
        low, high = drift.estimated_interval or (0.0, 1.0)
        return (
            f"estimated accuracy {drift.estimated_accuracy:.3f} [{low:.3f}, {high:.3f}] "
            f"vs holdout {drift.baseline_accuracy:.3f}, no labels needed"
        )
    drifted = [f for f in drift.features if f.drifted]
    return ", ".join(f"{f.feature} {f.test}={f.statistic:.3g} p={f.p_value:.2g}" for f in drifted)
