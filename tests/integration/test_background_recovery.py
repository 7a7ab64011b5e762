"""Background work that fails is restarted, reported by name meanwhile, and loses nothing:
a consume loop whose commits are refused after a rebalance, one whose consumer breaks, one
whose batches' writes are still in flight or fail, and
the monitor's registry calls while the registry is unreachable (real monitor and registry
processes)."""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaTimeoutError, RebalanceInProgressError

from shared import topics
from shared.broker import EmbeddedBroker
from shared.http import create_app
from shared.kafka import ConsumeLoop, EventPublisher, TryLater, make_consumer, make_producer
from shared.settings import CommonSettings
from shared.supervision import Supervisor
from tests.integration.conftest import read_topic, start_stack, stop_stack, upload_demo, wait_for
from tests.integration.proxy import Proxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        topics.ensure_topics(running.bootstrap, 3)
        yield running


class FaultyConsumer:
    """A real consumer whose `commit` and `poll` fail when the test says so."""

    def __init__(self, consumer: KafkaConsumer, commit_errors: list[Exception], poll_errors: list[Exception]):
        self._consumer = consumer
        self.commit_errors = commit_errors
        self.poll_errors = poll_errors

    def commit(self, offsets: Any = None) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self._consumer.commit(offsets)

    def poll(self, **kwargs: Any) -> dict[TopicPartition, list[ConsumerRecord]]:
        batches = self._consumer.poll(**kwargs)
        if batches and self.poll_errors:  # fails after fetching: that batch was never handled
            raise self.poll_errors.pop(0)
        return batches  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def produce(bootstrap: str, topic: str, values: list[str]) -> dict[TopicPartition, int]:
    """Send `values`; the next offset of each partition written to."""
    producer = make_producer(CommonSettings(kafka_bootstrap=bootstrap))
    futures = [producer.send(topic, key=value.encode(), value=value.encode()) for value in values]
    producer.flush(30)
    producer.close()
    ends: dict[TopicPartition, int] = {}
    for future in futures:
        meta = future.get(30)
        tp = TopicPartition(topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    return ends


def committed_to(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> bool:
    """`group` has committed every partition of `ends` up to its offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()


def test_a_commit_refused_after_a_rebalance_is_survived_and_nothing_is_lost(broker: EmbeddedBroker) -> None:
    topic, group = topics.RAW, f"recovery-{uuid.uuid4().hex[:6]}"
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    faults: list[Exception] = [CommitFailedError("injected"), RebalanceInProgressError("injected")]
    seen: list[str] = []

    def factory() -> Any:
        return FaultyConsumer(make_consumer(settings, group, [topic]), faults, [])

    def handler(batch: list[ConsumerRecord]) -> None:
        seen.extend(m.value.decode() for m in batch)

    with running_loop(settings, group, topic, handler, factory) as (loop, supervisor):
        first = [f"a-{i}" for i in range(300)]
        produce(broker.bootstrap, topic, first)
        wait_for(lambda: set(first) <= set(seen), "the first messages")
        second = [f"b-{i}" for i in range(100)]  # a batch of its own: the second commit is refused too
        produce(broker.bootstrap, topic, second)
        wait_for(lambda: set(second) <= set(seen) and not faults, "both injected commit failures")
        third = [f"c-{i}" for i in range(100)]
        ends = produce(broker.bootstrap, topic, third)
        wait_for(lambda: set(third) <= set(seen), "messages after the refused commits")
        wait_for(lambda: committed_to(broker.bootstrap, group, ends), "the group to commit to the end")
        status = supervisor.status()[loop.name]
        assert status == {"phase": "running", "restarts": 0, "last_error": None}  # survived, not restarted


def test_a_consume_loop_that_fails_is_restarted_named_by_healthz_and_reads_its_batch_again(
    broker: EmbeddedBroker,
) -> None:
    topic, group = topics.LABELS, f"recovery-{uuid.uuid4().hex[:6]}"
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    faults: list[Exception] = [RuntimeError("injected: the consumer broke")]
    seen: list[str] = []

    def factory() -> Any:
        return FaultyConsumer(make_consumer(settings, group, [topic]), [], faults)

    loop = ConsumeLoop(
        "consume-labels",
        factory,
        lambda batch: seen.extend(m.value.decode() for m in batch),
        EventPublisher(settings, "test"),
        settings,
    )
    # a long backoff, so that the test sees the task down
    supervisor = Supervisor("test", backoff_s=3.0)
    supervisor.add(loop)
    health = TestClient(
        create_app(
            "t", health=lambda: {"ready": loop.assigned.is_set()}, supervisor=supervisor, max_body_bytes=4096
        )
    )
    supervisor.start()
    try:
        wait_for(loop.assigned.is_set, "partitions")
        assert health.get("/healthz").status_code == 200
        values = [f"c-{i}" for i in range(200)]
        produce(broker.bootstrap, topic, values)
        wait_for(lambda: supervisor.down() == ["consume-labels"], "the injected failure")
        response = health.get("/healthz")
        assert response.status_code == 503 and response.json()["down"] == ["consume-labels"]
        assert "injected: the consumer broke" in response.json()["tasks"]["consume-labels"]["last_error"]
        wait_for(lambda: set(values) <= set(seen), "every message, after the restart", timeout_s=120)
        wait_for(lambda: health.get("/healthz").status_code == 200, "readiness again", timeout_s=120)
        assert supervisor.status()["consume-labels"]["restarts"] == 1
    finally:
        supervisor.stop()


def test_the_monitor_keeps_a_registry_call_until_the_registry_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stack = start_stack(tmp_path_factory.mktemp("recovery"), services=("registry", "monitor"))
    proxy = Proxy(stack.ports["registry"]).up()
    try:
        # the monitor reaches the registry through a proxy that the test takes down
        stack.processes["monitor"].send_signal(signal.SIGTERM)
        stack.processes["monitor"].wait(30)
        stack.env["CTLOOP_REGISTRY_URL"] = f"http://127.0.0.1:{proxy.port}"
        try:
            stack.spawn("monitor")
        finally:
            stack.env["CTLOOP_REGISTRY_URL"] = stack.url("registry")
        monitor = stack.url("monitor")

        def healthz() -> httpx.Response | None:
            try:
                return httpx.get(f"{monitor}/healthz", timeout=5)
            except httpx.HTTPError:
                return None

        wait_for(lambda: (r := healthz()) is not None and r.status_code == 200, "the monitor", timeout_s=120)
        proxy.down()
        upload_demo(stack, seed=1, rows=300)  # promoted: the monitor is told
        wait_for(
            lambda: (
                (r := healthz()) is not None
                and r.status_code == 503
                and r.json().get("down") == ["registry-link"]
            ),
            "/healthz to name the registry link while the registry is unreachable",
            timeout_s=120,
        )
        status = httpx.get(f"{monitor}/v1/drift/status", timeout=5, headers=stack.auth()).json()
        assert status["reference_version"] is None
        proxy.up()
        wait_for(
            lambda: (
                httpx.get(f"{monitor}/v1/drift/status", timeout=5, headers=stack.auth()).json()[
                    "reference_version"
                ]
                == 1
            ),
            "the reference fetched once the registry answers",
            timeout_s=120,
        )
        wait_for(
            lambda: (r := healthz()) is not None and r.status_code == 200, "readiness again", timeout_s=60
        )
    finally:
        proxy.down()
        stop_stack(stack)


@contextlib.contextmanager
def running_loop(
    settings: CommonSettings,
    group: str,
    topic: str,
    handler: Callable[[list[ConsumerRecord]], Future[None] | None],
    factory: Callable[[], Any] | None = None,
) -> Iterator[tuple[ConsumeLoop, Supervisor]]:
    """A supervised consume loop of `topic` (on `factory`'s consumer, or a plain one) with
    partitions assigned; stopped on exit."""
    loop = ConsumeLoop(
        f"consume-{topic}",
        factory or (lambda: make_consumer(settings, group, [topic])),
        handler,
        EventPublisher(settings, "recovery-test"),
        settings,
    )
    supervisor = Supervisor("test")
    supervisor.add(loop)
    supervisor.start()
    try:
        wait_for(loop.assigned.is_set, "partitions")
        yield loop, supervisor
    finally:
        supervisor.stop()


def test_a_message_its_handler_always_fails_on_is_dead_lettered_and_the_rest_go_on(
    broker: EmbeddedBroker,
) -> None:
    """The consume loop's safety net: a message that makes the handler raise something it
    did not dead-letter itself (a bug, an input nobody foresaw) costs its bounded retries,
    then it alone is dead-lettered and the partition moves on, committed to the end."""
    topic, group = topics.RECORDS, f"recovery-{uuid.uuid4().hex[:6]}"
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, consumer_retry_backoff_s=0.1)
    seen: list[str] = []
    tries: dict[str, int] = {}

    def handler(batch: list[ConsumerRecord]) -> None:
        values = [m.value.decode() for m in batch]
        for value in values:
            tries[value] = tries.get(value, 0) + 1
        if any(v.startswith("poison") for v in values):
            raise OverflowError("injected: int too large to convert to float")
        seen.extend(values)

    with running_loop(settings, group, topic, handler) as (loop, supervisor):
        marker = uuid.uuid4().hex[:6]
        values = (
            [f"ok-{marker}-{i}" for i in range(50)]
            + [f"poison-{marker}"]
            + [f"ok-{marker}-{i}" for i in range(50, 100)]
        )
        ends = produce(broker.bootstrap, topic, values)
        wait_for(lambda: {v for v in values if v.startswith("ok")} <= set(seen), "the valid messages")
        letters = read_topic(
            broker.bootstrap,
            topics.DEADLETTER,
            lambda es: any(e.payload.get("original") == f"poison-{marker}" for e in es),
        )
        letter = next(e.payload for e in letters if e.payload.get("original") == f"poison-{marker}")
        assert letter["origin"] == topic and letter["offset"] is not None and letter["partition"] is not None
        assert "OverflowError: injected" in letter["errors"][0]["reason"]
        assert (
            tries[f"poison-{marker}"] <= settings.consumer_max_attempts + 1
        )  # bounded: batch tries + one alone
        wait_for(lambda: committed_to(broker.bootstrap, group, ends), "the group to commit past the poison")
        assert supervisor.status()[loop.name]["restarts"] == 0


def test_a_cause_outside_the_messages_holds_the_partition_says_so_and_loses_nothing(
    broker: EmbeddedBroker,
) -> None:
    """`TryLater` (and broker errors) are retried without a bound, never dead-lettered, and
    readiness is False while the loop holds."""
    topic, group = topics.PREDICTIONS, f"recovery-{uuid.uuid4().hex[:6]}"
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, consumer_retry_backoff_s=0.1)
    seen: list[str] = []
    refusals = [5]  # the hold waits double from 0.1 s: 3 s in all (ten took a minute)

    def handler(batch: list[ConsumerRecord]) -> None:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise TryLater("injected: the broker did not acknowledge the writes")
        seen.extend(m.value.decode() for m in batch)

    with running_loop(settings, group, topic, handler) as (loop, _):
        values = [f"held-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]
        ends = produce(broker.bootstrap, topic, values)
        wait_for(lambda: loop.holding is not None, "the loop to hold")
        assert not loop.ready() and "TryLater" in (loop.holding or "")
        wait_for(lambda: set(values) <= set(seen), "every message once the cause cleared", timeout_s=120)
        wait_for(loop.ready, "readiness again")
        wait_for(lambda: committed_to(broker.bootstrap, group, ends), "the group to commit")


def test_writes_in_flight_are_committed_in_order_once_done_and_a_failed_one_is_read_again(
    broker: EmbeddedBroker,
) -> None:
    """A handler that returns the future of its batch's writes (ingest's `raw` handler) lets
    the loop handle the next batch meanwhile; nothing is committed before the writes of its
    batch and of every earlier batch are done, and a failed write makes the loop read its
    batch (and those after it) again."""
    topic, group = topics.TRAINER_CONTROL, f"recovery-{uuid.uuid4().hex[:6]}"  # one partition
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap, consumer_retry_backoff_s=0.1)
    handled: list[tuple[list[str], Future[None]]] = []

    def handler(batch: list[ConsumerRecord]) -> Future[None]:
        written: Future[None] = Future()
        handled.append(([m.value.decode() for m in batch], written))
        return written

    def values_handled() -> list[str]:
        return [v for values, _ in handled for v in values]

    with running_loop(settings, group, topic, handler):
        marker = uuid.uuid4().hex[:6]
        first = [f"first-{marker}-{i}" for i in range(50)]
        produce(broker.bootstrap, topic, first)
        wait_for(lambda: set(first) <= set(values_handled()), "the first batch")
        second = [f"second-{marker}-{i}" for i in range(50)]
        ends = produce(broker.bootstrap, topic, second)
        # handled while the first batch's writes are still on their way
        wait_for(lambda: set(second) <= set(values_handled()), "the second batch, the first unsettled")
        tp = next(iter(ends))
        assert not committed_to(broker.bootstrap, group, {tp: 1})  # nothing written: nothing committed

        calls = len(handled)
        for _, written in handled[1:]:
            written.set_result(None)  # a later batch done first: still nothing to commit
        handled[0][1].set_exception(KafkaTimeoutError("injected: the writes were not acknowledged"))
        wait_for(lambda: len(handled) > calls and handled[calls][0][0] == first[0], "the first batch again")
        assert not committed_to(
            broker.bootstrap, group, {tp: 1}
        )  # the later batch's success alone commits nothing

        def settle_everything() -> bool:
            for _, written in handled:
                if not written.done():
                    written.set_result(None)
            return committed_to(broker.bootstrap, group, ends)

        wait_for(settle_everything, "the group to commit both batches once written")
        assert set(first + second) <= set(values_handled()[calls:])  # both read again after the failure
