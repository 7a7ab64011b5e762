"""Ingest against a real broker: every rule's code over HTTP, body limits, producer resends on
the raw topic, backpressure (503 while the broker is paused, nothing lost or doubled after),
and a record too large for the broker on both doors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kafka import KafkaProducer

from services.supervisor import Stack
from shared import topics
from shared.settings import DEFAULT_SCHEMA
from tests.integration.conftest import read_all, read_topic, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("ingest"),
        services=("ingest",),
        CTLOOP_INGEST_ACK_TIMEOUT_S="3",
        CTLOOP_INGEST_MAX_BODY_BYTES="65536",
    )
    yield running
    stop_stack(running)


def test_each_rule_has_a_code(ingest: Stack) -> None:
    batch = [
        {"features": {k: v for k, v in GOOD.items() if k != "x2"}},
        {"features": {**GOOD, "shoe": 1}},
        {"features": {**GOOD, "x1": "1"}},
        {"features": {**GOOD, "amount": -3}},
        {"features": {**GOOD, "color": "pink"}},
        {"features": GOOD, "label": 5},
        {"features": GOOD, "id": "bad id"},
        {"features": GOOD, "event_time": "2099-01-01T00:00:00Z"},
        {"features": GOOD, "event_time": "2001-01-01T00:00:00Z"},
        {"features": GOOD, "event_time": "2026-11-21T00:00:00"},
        {"features": GOOD},
    ]
    body = httpx.post(
        f"{ingest.url('ingest')}/v1/records", json={"records": batch}, headers=ingest.auth("producer")
    ).json()
    assert [(e["index"], e["code"]) for e in body["rejected"]] == [
        (0, "missing"),
        (1, "unknown_field"),
        (2, "type"),
        (3, "range"),
        (4, "category"),
        (5, "label"),
        (6, "id_format"),
        (7, "time_future"),
        (8, "time_past"),
        (9, "time_zone"),
    ]
    assert [a["index"] for a in body["accepted"]] == [10]
    metrics = httpx.get(f"{ingest.url('ingest')}/metrics").text
    assert 'ctloop_ingest_rejected_total{code="time_future",kind="record"} 1.0' in metrics


def test_body_limit(ingest: Stack) -> None:
    big = json.dumps({"records": [{"features": GOOD}] * 2000})
    response = httpx.post(
        f"{ingest.url('ingest')}/v1/records",
        content=big,
        headers={"content-type": "application/json", **ingest.auth("producer")},
    )
    assert response.status_code == 413 and "limit of 65536" in response.json()["detail"]


def test_producer_resends_on_raw_count_once(ingest: Stack) -> None:
    producer = KafkaProducer(bootstrap_servers=ingest.bootstrap, acks="all")
    for _ in range(3):
        producer.send(topics.RAW, json.dumps({"id": "resend-1", "features": GOOD}).encode())
    producer.send(topics.RAW, b"x" * 70_000)
    producer.flush()
    producer.close()
    records = read_all(
        ingest.bootstrap, topics.RECORDS, lambda ev: any(e.payload["id"] == "resend-1" for e in ev)
    )
    assert sum(e.payload["id"] == "resend-1" for e in records) == 1
    letters = read_topic(
        ingest.bootstrap,
        topics.DEADLETTER,
        lambda ev: any("exceeds the limit" in e.payload["errors"][0]["reason"] for e in ev),
    )
    assert any("70000 bytes" in e.payload["errors"][0]["reason"] for e in letters)


def test_paused_broker_means_503_and_nothing_lost(ingest: Stack) -> None:
    url = f"{ingest.url('ingest')}/v1/records"
    before = [{"id": f"bp-a{i}", "features": GOOD} for i in range(20)]
    during = [{"id": f"bp-b{i}", "features": GOOD} for i in range(20)]
    assert (
        len(httpx.post(url, json={"records": before}, headers=ingest.auth("producer")).json()["accepted"])
        == 20
    )

    assert ingest.broker is not None
    ingest.broker.pause()
    try:
        refused = httpx.post(url, json={"records": during}, timeout=30, headers=ingest.auth("producer"))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "did not acknowledge" in refused.json()["detail"]
        again = httpx.post(url, json={"records": during}, timeout=30, headers=ingest.auth("producer"))
        assert again.status_code == 503  # still in flight: not sent a second time
    finally:
        ingest.broker.resume()

    def retried() -> dict | None:
        response = httpx.post(url, json={"records": during}, timeout=30, headers=ingest.auth("producer"))
        return response.json() if response.status_code == 200 else None

    body = wait_for(retried, "ingest to accept the retry after the broker resumed")
    assert sorted(i["id"] for i in body["accepted"] + body["duplicates"]) == sorted(r["id"] for r in during)

    wanted = {r["id"] for r in before + during}
    records = read_all(ingest.bootstrap, topics.RECORDS, lambda ev: wanted <= {e.payload["id"] for e in ev})
    counts = Counter(e.payload["id"] for e in records if e.payload["id"].startswith("bp-"))
    assert set(counts) == {r["id"] for r in before + during}  # nothing lost
    assert set(counts.values()) == {1}  # nothing doubled


def test_a_record_too_large_for_the_broker_is_refused_alone_and_its_id_freed(tmp_path: Path) -> None:
    """A record valid by its schema but larger than the producer's message limit (1 MiB) made
    `send` raise before anything was queued: the request failed and the batch's ids stayed
    reserved for the de-duplication window, so each retry got 503 for an hour. Now that record
    alone is rejected (`too_large`), the others are written, and its id is free at once; on
    the `raw` door it is dead-lettered and the consumer goes on."""
    schema = yaml.safe_load(DEFAULT_SCHEMA.read_text())
    for feature in schema["features"]:
        if feature["name"] == "color":
            feature["unseen"] = "accept"  # so that a 1.2 MB category is valid
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    stack = start_stack(
        tmp_path,
        services=("ingest",),
        CTLOOP_SCHEMA=str(tmp_path / "schema.yaml"),
        CTLOOP_INGEST_MAX_BODY_BYTES=str(4 * 1024 * 1024),
    )
    try:
        url = f"{stack.url('ingest')}/v1/records"
        huge = {"id": "r-huge", "features": {**GOOD, "color": "x" * 1_200_000}}
        batch = [{"id": "r-small-1", "features": GOOD}, huge, {"id": "r-small-2", "features": GOOD}]
        answer = httpx.post(url, json={"records": batch}, timeout=60, headers=stack.auth("producer"))
        assert answer.status_code == 200, answer.text
        assert [a["id"] for a in answer.json()["accepted"]] == ["r-small-1", "r-small-2"]
        rejected = answer.json()["rejected"]
        assert [(r["id"], r["code"]) for r in rejected] == [("r-huge", "too_large")]
        # its id is not held: the same id with a sane record goes through at once
        again = httpx.post(
            url, json={"id": "r-huge", "features": GOOD}, timeout=30, headers=stack.auth("producer")
        )
        assert again.status_code == 200 and again.json()["accepted"][0]["id"] == "r-huge", again.text

        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=4 * 1024 * 1024)
        producer.send(topics.RAW, json.dumps({**huge, "id": "r-huge-raw"}).encode())
        producer.send(topics.RAW, json.dumps({"id": "r-after-huge", "features": GOOD}).encode())
        producer.flush(30)
        producer.close()
        read_topic(
            stack.bootstrap, topics.RECORDS, lambda es: any(e.payload.get("id") == "r-after-huge" for e in es)
        )
        letters = read_topic(
            stack.bootstrap,
            topics.DEADLETTER,
            lambda es: any('"r-huge-raw"' in e.payload.get("original", "") for e in es),
        )
        letter = next(e.payload for e in letters if '"r-huge-raw"' in e.payload.get("original", ""))
        assert letter["errors"][0]["code"] == "too_large" and letter["offset"] is not None
        assert len(letter["original"]) < 5000
    finally:
        stop_stack(stack)
