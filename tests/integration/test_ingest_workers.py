"""Ingest as two worker processes sharing its port (`CTLOOP_INGEST_WORKERS=2`): every record
sent over HTTP and on `raw` is written once, the metrics count them all whichever worker took
them, a killed worker is started again while requests go on being answered, and stopping the
replica stops its workers."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from services.supervisor import Stack
from shared import topics
from tests.integration.conftest import read_all, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("workers"), services=("ingest",), CTLOOP_INGEST_WORKERS="2")
    yield running
    stop_stack(running)


def workers(stack: Stack) -> set[int]:
    """The pids of the ingest replica's worker processes (uvicorn's spawned children)."""
    parent = stack.processes[stack.names["ingest"][0]].pid
    found = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                found.add(int(child))
    return found


def counted(stack: Stack, origin: str) -> float:
    text = httpx.get(f"{stack.url('ingest')}/metrics", timeout=10).text
    match = re.search(
        rf'^ctloop_ingest_accepted_total\{{kind="record",origin="{origin}"\}} ([\d.e+]+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def post(stack: Stack, prefix: str, batches: int, size: int = 50) -> list[str]:
    """`batches` batches of new records, each on a connection of its own (so the kernel spreads
    them over the workers), four at a time; the ids every response accepted."""

    def one(b: int) -> list[str]:
        records = [{"id": f"{prefix}-{b}-{i}", "features": GOOD} for i in range(size)]
        response = httpx.post(
            f"{stack.url('ingest')}/v1/records",
            json={"records": records},
            headers=stack.auth("producer"),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["accepted"]]

    with ThreadPoolExecutor(4) as pool:
        return [i for ids in pool.map(one, range(batches)) for i in ids]


def on_records(stack: Stack, prefix: str, count: int) -> None:
    """Exactly `count` records with ids starting `prefix` are on `records`, each once."""
    events = read_all(
        stack.bootstrap,
        topics.RECORDS,
        lambda events: sum(e.payload["id"].startswith(prefix) for e in events) >= count,
    )
    ids = [e.payload["id"] for e in events if e.payload["id"].startswith(prefix)]
    assert len(ids) == count and len(set(ids)) == count


def test_both_doors_write_every_record_once_and_metrics_count_every_worker(ingest: Stack) -> None:
    assert len(wait_for(lambda: len(workers(ingest)) == 2 and workers(ingest), "two workers")) == 2  # type: ignore[arg-type]
    accepted = post(ingest, "http", batches=20)
    assert len(accepted) == 1000
    on_records(ingest, "http-", 1000)
    wait_for(
        lambda: counted(ingest, "http:/v1/records") == 1000, "the accepted count summed over the workers"
    )

    # both workers consume `raw` (each reports its task with its pid)
    text = httpx.get(f"{ingest.url('ingest')}/metrics", timeout=10).text
    pids = set(re.findall(r'^ctloop_background_task_up\{pid="(\d+)",task="consume-raw"\} 1\.0$', text, re.M))
    assert pids == {str(p) for p in workers(ingest)}

    producer = KafkaProducer(bootstrap_servers=ingest.bootstrap, acks="all")
    for i in range(500):
        record = {"id": f"raw-{i}", "features": GOOD}
        producer.send(topics.RAW, key=record["id"].encode(), value=json.dumps(record).encode())
    producer.flush()
    producer.close()
    wait_for(lambda: counted(ingest, topics.RAW) == 500, "the raw records counted by the workers")
    on_records(ingest, "raw-", 500)


def test_a_killed_worker_is_started_again(ingest: Stack) -> None:
    before = wait_for(lambda: len(workers(ingest)) == 2 and workers(ingest), "two workers")
    victim = min(before)  # type: ignore[type-var]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers(ingest) - before) == 1 and len(workers(ingest)) == 2, "a new worker")  # type: ignore[operator]
    assert len(post(ingest, "after", batches=8)) == 400
    on_records(ingest, "after-", 400)


def test_stopping_the_replica_stops_its_workers(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, services=("ingest",), CTLOOP_INGEST_WORKERS="2")
    try:
        running = wait_for(lambda: len(workers(stack)) == 2 and workers(stack), "two workers")
    finally:
        stack.stop()
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in running), "the workers to end", 60)  # type: ignore[attr-defined]
