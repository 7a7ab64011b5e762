"""A poison message on every topic a service consumes: each is dead-lettered with its reason
(by every consumer group that read it) and the consumer goes on with the next message."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.events import Envelope, Example, Prediction, Source, encode_event
from shared.kafka import make_producer
from shared.settings import CommonSettings
from shared.validation import Label, Record
from tests.integration.conftest import read_all, read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

JOIN_TTL_S = 20
JSON = {"content-type": "application/json"}
FEATURES = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}
NOW = datetime.now(UTC)


def poisons() -> dict[str, bytes]:
    """One of each kind of bad message, by what makes it bad, for every topic."""
    envelope = json.loads(encode_event(Label(id="r-x", label=1, event_time=NOW), SOURCE)[1])
    return {
        "not JSON": b"\x00\xff{{{ not json",
        "JSON, not an event": b'{"hello": "world"}',
        "unknown event type": json.dumps({**envelope, "type": "no.such.type"}).encode(),
        "payload of the wrong shape": json.dumps({**envelope, "payload": {"id": 5}}).encode(),
        "newer schema version": json.dumps({**envelope, "schema_version": 99}).encode(),
        "oversized": b'{"junk": "' + b"x" * 900_000 + b'"}',
        "nested 5,000 levels deep": b"[" * 5000 + b"]" * 5000,
        # its dead letter, escaped, once grew past the broker's message limit
        "200 KB of control characters": b'"' + b"\x01" * 200_000 + b'"',
    }


def schema_poisons(topic: str) -> dict[str, bytes]:
    """Events that are well formed but do not fit the dataset schema, on the topics whose
    consumers read features or labels (a numeric feature that is text, an integer of 400
    digits, a label that is no class): what a producer's bug, or a schema change, sends."""
    if topic == topics.RAW:
        return {
            "a 400-digit integer feature": json.dumps({"features": {**FEATURES, "x1": 10**400}}).encode(),
            "a numeric feature that is text": json.dumps({"features": {**FEATURES, "x1": "abc"}}).encode(),
        }
    if topic == topics.LABELS:
        return {
            "a label that is no class": _event(Label(id="r-poison", label=1, event_time=NOW), label="abc")
        }
    record = Record(id="r-poison", event_time=NOW, features=FEATURES, label=1)  # type: ignore[arg-type]
    payload = {
        topics.RECORDS: record,
        topics.PREDICTIONS: Prediction(
            prediction_id="p-poison",
            record_id="r-poison",
            model_name="demo",
            model_version=1,
            features=FEATURES,  # type: ignore[arg-type]
            prediction=1,
            probabilities={"0": 0.5, "1": 0.5},
            event_time=NOW,
        ),
        topics.EXAMPLES: Example(record_id="r-poison", features=FEATURES, label=1, event_time=NOW),  # type: ignore[arg-type]
    }.get(topic)
    if payload is None:
        return {}
    return {
        "a 400-digit integer feature": _event(payload, x1=10**400),
        "a numeric feature that is text": _event(payload, x1="abc"),
    }


def _event(payload: Record | Prediction | Example | Label, label: object = None, **features: object) -> bytes:
    event = json.loads(encode_event(payload, SOURCE)[1])
    if features:
        event["payload"]["features"] = {**event["payload"]["features"], **features}
    if label is not None:
        event["payload"]["label"] = label
    # NOTE: json writes a 400-digit integer as it is; a Python producer could send it so.
    return json.dumps(event).encode()


SOURCE = Source(service="poison-test", instance="t")
# Who consumes what (consumer service, topic); the models topic is read by three of them.
CONSUMERS = {
    topics.RAW: ["ingest"],
    topics.RECORDS: ["monitor"],
    topics.PREDICTIONS: ["monitor"],
    topics.LABELS: ["monitor"],
    topics.EXAMPLES: ["trainer"],
    topics.DRIFT: ["trainer"],
    topics.MODELS: ["serving", "trainer", "monitor"],
    topics.TRAINING: ["monitor"],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("poison"),
        CTLOOP_MONITOR_JOIN_TTL_S=str(JOIN_TTL_S),
        CTLOOP_CONSUMER_RETRY_BACKOFF_S="0.2",
    )
    yield running
    stop_stack(running)


def test_every_consumer_dead_letters_poison_and_goes_on(stack: Stack) -> None:
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    bad = {topic: {**poisons(), **schema_poisons(topic)} for topic in CONSUMERS}
    for topic in CONSUMERS:
        for value in bad[topic].values():
            producer.send(topic, value, key=b"poison")
    # then valid messages behind the poison, whose effects show each consumer went on
    raw_record = {"id": "after-raw", "features": FEATURES, "label": 1}
    producer.send(topics.RAW, json.dumps(raw_record).encode(), key=b"after-raw")
    labelled = Record(id="after-records", event_time=NOW, features=FEATURES, label=0)  # type: ignore[arg-type]
    producer.send(topics.RECORDS, encode_event(labelled, SOURCE)[1], key=b"after-records")
    late = Record(id="after-labels", event_time=NOW, features=FEATURES)  # type: ignore[arg-type]
    producer.send(topics.RECORDS, encode_event(late, SOURCE)[1], key=b"after-labels")
    label = Label(id="after-labels", label=1, event_time=NOW)
    producer.send(topics.LABELS, encode_event(label, SOURCE)[1], key=b"after-labels")
    producer.flush(60)
    producer.close()

    upload_demo(stack, seed=1, rows=300)  # a valid `models` event

    # ingest validated the raw record after the poison; the monitor joined both examples
    read_topic(
        stack.bootstrap, topics.RECORDS, lambda es: any(e.payload.get("id") == "after-raw" for e in es)
    )
    examples = read_topic(
        stack.bootstrap,
        topics.EXAMPLES,
        lambda es: {"after-raw", "after-records", "after-labels"} <= {e.payload.get("record_id") for e in es},
    )
    assert examples
    # serving and the monitor followed the promotion behind the poison on `models`
    wait_for(
        lambda: httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version") == 1,
        "serving to load v1",
    )
    wait_for(
        lambda: (
            httpx.get(f"{stack.url('monitor')}/v1/drift/status", timeout=5, headers=stack.auth()).json()[
                "reference_version"
            ]
            == 1
        ),
        "the monitor to take v1's reference",
    )
    # the trainer read its examples behind the poison on `examples`
    wait_for(
        lambda: "ctloop_trainer_examples 3.0" in httpx.get(f"{stack.url('trainer')}/metrics", timeout=5).text,
        "the trainer to hold the three examples",
    )

    expected = {(topic, service) for topic, services in CONSUMERS.items() for service in services}

    def rejections(events: list[Envelope]) -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], int] = {}
        for e in events:
            if e.type == "input.rejected" and e.payload.get("origin") in CONSUMERS:
                key = (e.payload["origin"], e.source.service)
                seen[key] = seen.get(key, 0) + 1
        return seen

    try:
        letters = read_topic(
            stack.bootstrap,
            topics.DEADLETTER,
            lambda es: all(rejections(es).get(k, 0) >= len(bad[k[0]]) for k in expected),
            timeout_s=120,
        )
    except AssertionError:
        seen = read_all(stack.bootstrap, topics.DEADLETTER, lambda es: len(es) > 0)
        found: dict[str, int] = {}
        for e in seen:
            key = f"{e.payload.get('origin')} by {e.source.service}"
            found[key] = found.get(key, 0) + 1
        raise AssertionError(f"dead letters: {found}") from None
    counts = rejections(letters)
    assert all(counts.get(k, 0) >= len(bad[k[0]]) for k in expected), (
        counts
    )  # at least once: a replay may repeat one
    for e in letters:
        if e.type == "input.rejected" and e.payload.get("origin") in CONSUMERS:
            assert e.payload["errors"][0]["reason"], "a dead letter without a reason"
            assert e.payload["offset"] is not None
            assert len(e.payload["original"]) < 5000, "a dead letter's excerpt is bounded"


def _answer_before_the_body(url: str, path: str, length: int, headers: str = "") -> str:
    """Send only the headers of a POST whose body would be `length` bytes; the status line of
    the answer the server gives without waiting for the body."""
    address = httpx.URL(url)
    with socket.create_connection((address.host, address.port), timeout=30) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{headers}\r\n".encode()
        )
        return connection.recv(4096).decode(errors="replace").split("\r\n")[0]


def test_odd_http_input_gets_a_4xx_naming_what_was_wrong(stack: Stack) -> None:
    ingest, serving = stack.url("ingest"), stack.url("serving")
    huge = json.dumps({"features": {**FEATURES, "x1": 10**400}, "id": "r-huge"})
    good = json.dumps({"features": FEATURES, "id": "r-beside-huge"})
    response = httpx.post(
        f"{ingest}/v1/records",
        content=f'{{"records": [{huge}, {good}]}}',
        headers={**JSON, **stack.auth("producer")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert [a["id"] for a in response.json()["accepted"]] == ["r-beside-huge"]  # the valid one went on
    rejected = response.json()["rejected"][0]
    assert (
        rejected["field"] == "features.x1"
        and "digits" in rejected["reason"]
        and len(rejected["reason"]) < 200
    )

    for body, words in [
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 200 levels"),
        (b'{"records": [{"features": {"x1": ' + b"9" * 5000 + b"}}]}", "out of range"),
    ]:
        answer = httpx.post(
            f"{ingest}/v1/records", content=body, headers={**JSON, **stack.auth("producer")}, timeout=30
        )
        assert answer.status_code == 400 and words in answer.json()["detail"], answer.text

    wait_for(
        lambda: httpx.get(f"{serving}/healthz", timeout=5).json().get("model_version"),
        "serving to load a model",
    )
    answer = httpx.post(f"{serving}/v1/predict", content=f'{{"records": [{huge}]}}', headers=JSON, timeout=30)
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "features.x1", answer.text
    deep = httpx.post(f"{serving}/v1/predict", content=b"[" * 5000 + b"]" * 5000, headers=JSON, timeout=30)
    assert deep.status_code == 400 and "nested deeper than 200 levels" in deep.text, deep.text
    many = httpx.post(
        f"{serving}/v1/predict", json={"records": [{"features": FEATURES}] * 10_001}, timeout=60
    )
    assert many.status_code == 413 and "10001 rows exceed the limit of 10000" in many.text

    # every service: an over-limit body is refused from its length alone, before it is sent (to
    # a caller with the route's role: without it, the 401 comes first)
    for service, path, length, role in [
        ("ingest", "/v1/records", 17 * 1024 * 1024, "producer"),
        ("serving", "/v1/predict", 17 * 1024 * 1024, None),
        ("serving", "/v2/models/demo/infer", 17 * 1024 * 1024, None),
        ("trainer", "/v1/runs", 2 * 1024 * 1024, None),
        ("registry", "/v1/models/demo/versions/1/promote", 2 * 1024 * 1024, "operator"),
    ]:
        auth = f"Authorization: Bearer {stack.token(role)}\r\n" if role else ""
        status = _answer_before_the_body(stack.url(service), path, length, auth)
        assert " 413 " in status, (service, path, status)
    status = _answer_before_the_body(stack.url("ingest"), "/v1/records", 17 * 1024 * 1024)
    assert " 401 " in status, status
    # a registry upload without a token is refused before its body is read
    status = _answer_before_the_body(stack.url("registry"), "/v1/models/demo/versions", 5 * 1024 * 1024)
    assert " 401 " in status, status

    # a client that sends its whole body before it reads (urllib, Connection: close) reads the 413
    request = urllib.request.Request(
        f"{ingest}/v1/records", data=b"x" * (66 * 1024 * 1024), headers={**JSON, **stack.auth("producer")}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413 and "exceeds the limit" in refused.value.read().decode()

    # a chunked body (no length) is cut off as it passes the limit
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * (1024 * 1024)

    chunked = httpx.post(f"{serving}/v1/predict", content=chunks(), headers=JSON, timeout=60)
    assert chunked.status_code == 413, chunked.text

    # and every service still answers
    for service in ("ingest", "serving", "trainer", "registry", "monitor"):
        assert httpx.get(f"{stack.url(service)}/livez", timeout=10).status_code == 200


def test_join_halves_on_an_idle_partition_expire(stack: Stack) -> None:
    """A record whose label never comes leaves the join after its time to live, even when
    nothing else arrives on its partition (expiry used to run only on the next event there)."""
    producer = make_producer(CommonSettings(kafka_bootstrap=stack.bootstrap))
    lonely = Record(id="r-lonely", event_time=NOW, features=FEATURES)  # type: ignore[arg-type]
    producer.send(topics.RECORDS, encode_event(lonely, SOURCE)[1], key=b"r-lonely")
    producer.flush(30)
    producer.close()

    def waiting() -> float:
        text = httpx.get(f"{stack.url('monitor')}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("ctloop_monitor_join_waiting "))
        return float(line.split()[1])

    wait_for(lambda: waiting() >= 1, "the record to wait for its label")
    wait_for(lambda: waiting() == 0, "the waiting record to expire", timeout_s=JOIN_TTL_S * 6)
