"""The one Kafka factory (kafka-python) and the consume loop every non-faust service runs.

Producers are idempotent with acks=all; consumers have a group id, commit explicitly after
their handler returns (at-least-once: handlers are idempotent on event or record id), and use
session timeouts that suit Tansu. `EventPublisher` is how services emit envelopes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from shared import topics
from shared.events import (
    BadEvent,
    DeadLetter,
    Envelope,
    Payload,
    Source,
    dead_letter_of,
    encode_event,
    encode_validated,
)
from shared.partitioner import KeyPartitioner
from shared.settings import CommonSettings

log = logging.getLogger(__name__)


def make_producer(settings: CommonSettings, **overrides: object) -> KafkaProducer:
    """An idempotent, acks=all producer: an acknowledged write is on the broker."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        # NOTE: with the default 16 KiB batches, batches queue behind the sender and every send
        # wakes it; 512 KiB took 650-byte sends from ~23k to ~57k/s on Tansu here.
        "batch_size": 512 * 1024,
        "retries": 5,
        "request_timeout_ms": 15_000,
        "client_id": f"ctloop-{settings.instance}",
        "partitioner": KeyPartitioner(),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def _consumer_config(settings: CommonSettings) -> dict[str, object]:
    """What every ctloop consumer shares: explicit commits, batches of 500, our client id."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_auto_commit": False,
        "max_poll_records": 500,
        "client_id": f"ctloop-{settings.instance}",
    }


def _loop_fetch(settings: CommonSettings, prompt: bool) -> dict[str, object]:
    """A prompt consumer's fetches wait `kafka_loop_fetch_wait_ms` at most for data."""
    return {"fetch_max_wait_ms": settings.kafka_loop_fetch_wait_ms} if prompt else {}


def make_consumer(
    settings: CommonSettings,
    group_id: str,
    topics: Iterable[str],
    listener: ConsumerRebalanceListener | None = None,
    prompt: bool = False,
    **overrides: object,
) -> KafkaConsumer:
    """A group consumer with explicit commits, reading from the start of new partitions
    (`listener`: told when the group gives it partitions and takes them back; `prompt`: one of
    the loop's hops, see `kafka_loop_fetch_wait_ms`)."""
    config: dict[str, object] = {
        **_consumer_config(settings),
        **_loop_fetch(settings, prompt),
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    consumer.subscribe(list(topics), listener=listener)
    return consumer


def make_replay_consumer(
    settings: CommonSettings, topic: str, keep: int, timeout_s: float = 60.0, prompt: bool = False
) -> KafkaConsumer:
    """A consumer of every partition of `topic` without a group, from the newest `keep`
    messages of each partition: for state rebuilt from a topic at every start (it commits
    nothing, so a restart reads the same tail again)."""
    consumer = KafkaConsumer(**_consumer_config(settings), **_loop_fetch(settings, prompt), group_id=None)
    deadline = time.monotonic() + timeout_s
    while not (numbers := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            consumer.close()
            raise RuntimeError(f"topic {topic} has no partitions after {timeout_s:.0f}s")
        time.sleep(0.5)
    partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
    consumer.assign(partitions)
    begins, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, max(begins[tp], ends[tp] - keep))
    return consumer


def read_tail(settings: CommonSettings, topic: str, keep: int, timeout_s: float = 60.0) -> list[Envelope]:
    """The valid envelopes among the newest `keep` messages of each partition of `topic`
    (what could be read within `timeout_s`, if the broker is slow)."""
    consumer = make_replay_consumer(settings, topic, keep, timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        partitions = list(consumer.assignment())
        ends = consumer.end_offsets(partitions)
        events: list[Envelope] = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                log.warning(
                    "read %d events of %s's tail before the %.0fs limit", len(events), topic, timeout_s
                )
                break
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    with contextlib.suppress(BadEvent):
                        events.append(Envelope.decode(message.value))
        return events
    finally:
        consumer.close()


def read_processed(
    settings: CommonSettings,
    group: str,
    topic_names: Iterable[str],
    partition: int,
    since_s: float,
    timeout_s: float = 300.0,
) -> tuple[list[ConsumerRecord], bool]:
    """Partition `partition` of each topic, from the messages produced at `since_s` (seconds
    since the epoch) up to the offsets `group` has committed: what that group already
    processed lately, for state that is rebuilt from its inputs instead of a changelog. The
    flag says whether all of it was read (False: `timeout_s` ran out first).

    Empty when the group has committed nothing. A few messages older than `since_s` may come
    too (Tansu answers a time with the start of the batch that holds it): filter by timestamp.
    """
    partitions = [TopicPartition(topic, partition) for topic in topic_names]
    offsets = KafkaConsumer(**_consumer_config(settings), group_id=group)
    try:
        # NOTE: committed() only asks the group coordinator; this consumer never joins the group.
        ends = {tp: offsets.committed(tp) for tp in partitions}
    finally:
        offsets.close()
    ends = {tp: end for tp, end in ends.items() if end}
    if not ends:
        return [], True
    consumer = KafkaConsumer(**_consumer_config(settings), group_id=None)
    try:
        consumer.assign(list(ends))
        starts = consumer.offsets_for_times({tp: int(since_s * 1000) for tp in ends})
        remaining = set()
        for tp, end in ends.items():
            start = starts.get(tp)
            if start is not None and start.offset < end:
                consumer.seek(tp, start.offset)
                remaining.add(tp)
        deadline = time.monotonic() + timeout_s
        messages: list[ConsumerRecord] = []
        while remaining:
            if time.monotonic() > deadline:
                log.warning(
                    "read %d messages of partition %d before the %.0fs limit",
                    len(messages),
                    partition,
                    timeout_s,
                )
                return messages, False
            for tp, batch in consumer.poll(timeout_ms=500).items():
                messages += [message for message in batch if message.offset < ends[tp]]
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        return messages, True
    finally:
        consumer.close()


def faust_broker_config(settings: CommonSettings) -> dict[str, Any]:
    """The faust (aiokafka) side of the same broker settings, for the monitor's faust app."""
    return {
        "broker": ";".join(f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")),
        "broker_session_timeout": settings.kafka_session_timeout_ms / 1000,
        "broker_heartbeat_interval": settings.kafka_heartbeat_interval_ms / 1000,
        "topic_partitions": settings.topic_partitions,
        "producer_acks": -1,
        # NOTE: faust's defaults (a 4,096-event stream buffer, 1 MiB fetches) left its agents
        # idle for about a second every few tens of thousands of records on Tansu; with these
        # the monitor and a bare agent both run without stalls (benchmarks/RESULTS.md).
        "stream_buffer_maxsize": 16384,
        "consumer_max_fetch_size": 4 * 1024 * 1024,
    }


DEAD_LETTERS = Counter(
    "ctloop_dead_letters_total", "Inputs refused and sent to `deadletter`", ["service", "origin"]
)


def _origin_label(origin: str) -> str:
    """A topic name or an HTTP route, as a metric label: a route's method and path without
    anything a client chose (bounded cardinality)."""
    return origin if not origin.startswith("http:") else origin.split("?")[0][:64]


class EventPublisher:
    """Sends envelopes for one service, keyed by entity id so order holds per entity."""

    def __init__(self, settings: CommonSettings, service: str, producer: KafkaProducer | None = None):
        self.source = Source(service=service, instance=settings.instance)
        self.producer = producer or make_producer(settings)
        self._dead_letters: list[FutureRecordMetadata] = []
        self._dead_letters_lock = threading.Lock()

    def publish(
        self,
        topic: str,
        payload: Payload,
        key: str,
        *,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        event_id: str | None = None,
    ) -> tuple[str, FutureRecordMetadata]:
        """Send one event; returns its id and the producer's future for the write (`event_id`:
        send an event again under the id it was first sent with)."""
        event_id, value = encode_event(
            payload,
            self.source,
            cause=cause,
            correlation_id=correlation_id,
            causation_id=causation_id,
            event_id=event_id,
        )
        return event_id, self.producer.send(topic, key=key.encode(), value=value)

    def publish_validated(
        self, topic: str, payload_type: type[BaseModel], fields: Mapping[str, Any], key: str
    ) -> tuple[str, FutureRecordMetadata]:
        """`publish` for a new event whose payload values are already validated
        (`shared.events.encode_validated`: for paths that write one event per record)."""
        event_id, value = encode_validated(payload_type, fields, self.source)
        return event_id, self.producer.send(topic, key=key.encode(), value=value)

    def dead_letter(
        self,
        origin: str,
        reason: str,
        raw: bytes | None,
        partition: int | None = None,
        offset: int | None = None,
        field: str = "<message>",
    ) -> None:
        """Send an input that could not be used to `deadletter`, with why and an excerpt."""
        self.send_dead_letter(dead_letter_of(origin, reason, raw, partition, offset, field))

    def send_dead_letter(self, letter: DeadLetter) -> None:
        """Send a dead letter; `wait_for_dead_letters` tells a consumer that they were written
        before it commits past their inputs (a dead letter is how such an input is not lost)."""
        _, future = self.publish(topics.DEADLETTER, letter, key=letter.origin)
        DEAD_LETTERS.labels(self.source.service, _origin_label(letter.origin)).inc()
        with self._dead_letters_lock:
            self._dead_letters.append(future)

    def wait_for_dead_letters(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker took every dead letter sent so far (raises if it did not)."""
        with self._dead_letters_lock:
            pending, self._dead_letters = self._dead_letters, []
        for future in pending:  # a failure raises: the caller handles its batch again
            future.get(timeout=timeout_s)

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.close(timeout=5)


def decoded(
    messages: list[ConsumerRecord], publisher: EventPublisher
) -> Iterator[tuple[ConsumerRecord, Envelope, Any]]:
    """Each message as (message, envelope, typed payload); what is not a valid event goes to
    the dead-letter topic with the reason, and the consumer moves on."""
    for message in messages:
        try:
            event = Envelope.decode(message.value)
            payload = event.parsed()
        except BadEvent as exc:
            publisher.dead_letter(message.topic, str(exc), message.value, message.partition, message.offset)
            continue
        yield message, event, payload


CONSUMER_LAG = Gauge(
    "ctloop_consumer_lag",
    "Messages behind the partition's end, per consumer group",
    ["group", "topic", "partition"],
)


def report_lag(consumer: KafkaConsumer, group: str) -> None:
    """Set the lag gauge for every assigned partition from what the last fetch learned."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(0, highwater - consumer.position(tp)))


Handler = Callable[[list[ConsumerRecord]], "Future[None] | None"]
"""Handles a batch. It may return a future of the batch's writes instead of waiting for them
(ingest's `raw` handler does): the loop then handles the next batch meanwhile, and commits a
batch only once its writes and those of every batch before it succeeded."""

WRITES_WAIT_S = 60.0
"""How long the loop waits for a batch's writes before holding it as failed."""


@dataclass
class _Unsettled:
    """A handled batch whose writes may still be on their way; committed once they are done."""

    written: Future[None] | None
    starts: dict[TopicPartition, int]
    """Each partition's first offset in the batch (where to rewind if its writes fail)."""
    ends: dict[TopicPartition, int]
    """Each partition's offset after the batch (what to commit)."""
    count: int
    since: float = field(default_factory=time.monotonic)


DEAD_LETTERED = Counter(
    "ctloop_consumer_dead_lettered_total",
    "Messages a consume loop gave up on after its retries (sent to `deadletter`)",
    ["consumer"],
)
HOLDS = Counter(
    "ctloop_consumer_holds_total",
    "Times a consume loop held its partitions for a cause outside the messages (broker down)",
    ["consumer"],
)


class TryLater(Exception):
    """Raised by a handler when a batch cannot be finished now for a reason outside its
    messages (a write still in flight, the broker not answering): the loop holds the batch and
    tries again, however long it takes, and never dead-letters it."""


def outside_the_messages(exc: BaseException) -> bool:
    """Whether an error says nothing about the messages being handled: the broker or the
    network (a message too large to send is the message's own fault)."""
    if isinstance(exc, TryLater | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError)


class ConsumeLoop:
    """A `Worker` (shared.supervision) that polls a consumer, hands each batch to `handler`,
    then commits.

    The handler must be quick (hand long work to another thread) so that the loop keeps
    polling within `max_poll_interval_ms`, and idempotent (a batch may be handled again).
    Handlers dead-letter the bad messages they recognise; for anything else a message can make
    a handler raise, the loop is the safety net: it tries the batch `consumer_max_attempts`
    times with growing waits, then hands the messages over one at a time and dead-letters each
    that still fails (with the error, topic, partition, offset and an excerpt), so one message
    never stops a partition. Errors outside the messages (`outside_the_messages`: the broker,
    `TryLater`) are retried without a bound instead, and meanwhile `ready()` is False. Nothing
    is committed before the batch's dead letters are written.

    A commit refused because the group rebalanced is survived: the batch is not committed, so
    whoever owns its partitions now reads it again. Anything else ends `run` with the error,
    for the supervisor to restart it on a new consumer.

    With `while_set`, the loop consumes only while that event is set: it waits for it, and when
    it clears, closes its consumer (leaving the group, so another process gets the partitions
    at once) and waits again — the trainer's group is read by the active replica only.

    A handler that returns the future of its batch's writes lets up to `in_flight` batches be
    written while the next is handled (the broker's round trip no longer stalls the loop); their
    offsets are committed in order as the writes succeed, and a write that fails (or is not
    acknowledged within `WRITES_WAIT_S`) rewinds every partition to the first batch not yet
    committed and holds, as a broker error does.
    """

    def __init__(
        self,
        name: str,
        consumer_factory: Callable[[], KafkaConsumer],
        handler: Handler,
        publisher: EventPublisher,
        settings: CommonSettings,
        while_set: threading.Event | None = None,
        in_flight: int = 4,  # NOTE: ingest's `raw` path: 2 gave 11.6-17.4k records/s, 4 14-18k, 8 no more
    ) -> None:
        self.name = name
        self._in_flight = in_flight
        self._factory = consumer_factory
        self._while_set = while_set
        self._handler = handler
        self._publisher = publisher
        self._max_attempts = settings.consumer_max_attempts
        self._backoff_s = settings.consumer_retry_backoff_s
        self._hold_wait_s = self._backoff_s
        self._stop_event = threading.Event()
        self.assigned = threading.Event()
        """Set while the consumer has partitions."""
        self.holding: str | None = None
        """Why the loop holds its partitions (an error outside the messages), or None."""

    def ready(self) -> bool:
        """Readiness: partitions assigned and not held."""
        return self.assigned.is_set() and self.holding is None

    def _wanted(self) -> bool:
        return self._while_set is None or self._while_set.is_set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if self._wanted():
                self._consume()
            else:
                self._stop_event.wait(0.25)

    def _consume(self) -> None:
        self.assigned.clear()
        self.holding = None
        consumer = self._factory()
        unsettled: deque[_Unsettled] = deque()
        try:
            while not self._stop_event.is_set() and self._wanted():
                # NOTE: with writes in flight, a short poll: when nothing new comes, settle them
                batches = consumer.poll(timeout_ms=20 if unsettled else 500)
                if consumer.assignment():
                    self.assigned.set()
                    report_lag(consumer, consumer.config["group_id"] or self.name)
                if not batches:  # idle: commit what is written, without waiting for the rest
                    self._settle(consumer, unsettled, keep=len(unsettled))
                    continue
                handled, written = self._handle(consumer, batches)
                if not handled:
                    continue
                unsettled.append(
                    _Unsettled(
                        written,
                        {tp: batch[0].offset for tp, batch in batches.items()},
                        {tp: batch[-1].offset + 1 for tp, batch in batches.items()},
                        sum(len(b) for b in batches.values()),
                    )
                )
                self._settle(consumer, unsettled, keep=self._in_flight - 1)
        finally:
            self.assigned.clear()
            with contextlib.suppress(Exception):  # commit what is written already; no waiting
                self._settle(consumer, unsettled, keep=len(unsettled), hold=False)
            consumer.close()

    def _settle(
        self, consumer: KafkaConsumer, unsettled: deque[_Unsettled], keep: int, hold: bool = True
    ) -> None:
        """Commit the batches whose writes are done, oldest first, waiting for the oldest while
        more than `keep` are unsettled. A failed write (or one unanswered `WRITES_WAIT_S` after
        its batch was handled) rewinds to the oldest unsettled batch."""
        ends: dict[TopicPartition, int] = {}
        count = 0
        while unsettled:
            oldest = unsettled[0]
            if oldest.written is not None:
                left = WRITES_WAIT_S - (time.monotonic() - oldest.since)
                if not oldest.written.done() and len(unsettled) <= keep and left > 0:
                    break
                try:
                    oldest.written.result(timeout=max(0.0, left))
                except Exception as exc:
                    starts: dict[TopicPartition, int] = {}
                    for batch in unsettled:
                        for tp, offset in batch.starts.items():
                            starts[tp] = min(starts.get(tp, offset), offset)
                    unsettled.clear()
                    if hold:
                        self._hold(consumer, {}, exc, starts)
                    break
            ends.update(oldest.ends)
            count += oldest.count
            unsettled.popleft()
        if ends and consumer.config["group_id"] is not None:  # a replay consumer commits nothing
            self._commit(consumer, count, ends)

    def _handle(
        self, consumer: KafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> tuple[bool, Future[None] | None]:
        """Handle a poll's batches; True when every message was handled or dead-lettered and
        the dead letters are written (with the future of the batch's writes, if the handler
        gave one), False when the consumer was sought back to retry."""
        records = [r for batch in batches.values() for r in batch]
        written: Future[None] | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                written = self._handler(records)
                break
            except Exception as exc:
                if outside_the_messages(exc):
                    return self._hold(consumer, batches, exc), None
                log.warning(
                    "%s: a batch of %d failed (attempt %d of %d): %s: %s",
                    self.name,
                    len(records),
                    attempt,
                    self._max_attempts,
                    type(exc).__name__,
                    exc,
                )
                if attempt < self._max_attempts and self._stop_event.wait(
                    self._backoff_s * 2 ** (attempt - 1)
                ):
                    return self._seek_back(consumer, batches), None
        else:
            done: dict[TopicPartition, int] = {}
            for record in records:
                try:
                    alone = self._handler([record])
                    if alone is not None:  # one at a time, the writes are waited for at once
                        alone.result(timeout=WRITES_WAIT_S)
                except Exception as exc:
                    if outside_the_messages(exc):
                        return self._hold(consumer, batches, exc, done), None
                    self._give_up(record, exc)
                done[TopicPartition(record.topic, record.partition)] = record.offset + 1
        try:
            self._publisher.wait_for_dead_letters()
        except Exception as exc:
            return self._hold(consumer, batches, exc), None
        self.holding, self._hold_wait_s = None, self._backoff_s
        return True, written

    def _give_up(self, record: ConsumerRecord, exc: Exception) -> None:
        log.error(
            "%s: %s[%d]@%d failed alone after its batch failed %d times; dead-lettered: %s: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            self._max_attempts,
            type(exc).__name__,
            exc,
        )
        DEAD_LETTERED.labels(self.name).inc()
        reason = f"could not be processed ({self._max_attempts} attempts): {type(exc).__name__}: {exc}"
        self._publisher.dead_letter(record.topic, reason, record.value, record.partition, record.offset)

    def _hold(
        self,
        consumer: KafkaConsumer,
        batches: dict[TopicPartition, list[ConsumerRecord]],
        exc: BaseException,
        done: dict[TopicPartition, int] | None = None,
    ) -> bool:
        reason = f"{type(exc).__name__}: {exc}"
        if reason != self.holding:
            log.warning("%s: holding its partitions until this clears: %s", self.name, reason)
        self.holding = reason
        HOLDS.labels(self.name).inc()
        self._seek_back(consumer, batches, done)
        self._stop_event.wait(self._hold_wait_s)
        self._hold_wait_s = min(15.0, self._hold_wait_s * 2)
        return False

    @staticmethod
    def _seek_back(
        consumer: KafkaConsumer,
        batches: dict[TopicPartition, list[ConsumerRecord]],
        done: dict[TopicPartition, int] | None = None,
    ) -> bool:
        """Rewind each partition to its first message not yet handled (`done` first: where
        handling got to, or where unsettled writes began)."""
        starts = {partition: batch[0].offset for partition, batch in batches.items()}
        assigned = consumer.assignment()
        for partition, offset in {**starts, **(done or {})}.items():
            if partition in assigned:  # one lost in a rebalance is its new owner's to read
                consumer.seek(partition, offset)
        return False

    def _commit(self, consumer: KafkaConsumer, count: int, ends: dict[TopicPartition, int]) -> None:
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in ends.items()})
        except (
            CommitFailedError,
            RebalanceInProgressError,
            IllegalGenerationError,
            UnknownMemberIdError,
        ) as exc:
            log.warning(
                "%s: commit of %d records refused after a rebalance (%s); they will be read again",
                self.name,
                count,
                type(exc).__name__,
            )

    def stop(self) -> None:
        self._stop_event.set()
