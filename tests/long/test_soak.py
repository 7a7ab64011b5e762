"""Minutes of sustained traffic on the whole stack with a concept drift and a swap in the
middle: predictions through serving with labels arriving late (the demo's driver, at 300
records/s) and, beside them, unlabelled record batches through ingest. No request may fail,
memory must level off (RSS sampled every second), consumer lag must come back to zero, and
once the load stops the joins' waiting halves must expire on idle partitions.

Runs in `make test-long` (marker `long`); CTLOOP_SOAK_RECORDS sets the streamed records."""

from __future__ import annotations

import os
import re
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.common import RssSampler
from services.demo.driver import DemoConfig, run_demo
from services.demo.stream import ConceptStream
from services.supervisor import Stack
from tests.integration.conftest import start_stack, stop_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.long]

RECORDS = int(os.environ.get("CTLOOP_SOAK_RECORDS", "180000"))
"""At 300 records/s, ten minutes of load."""
JOIN_TTL_S = 30


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    # The trainer's example store and the monitor's join table are bounded by configuration
    # (count and time to live); small bounds make them fill early in the run, so what the
    # second half of the run shows is the steady state, where a leak would still grow.
    running = start_stack(
        tmp_path, CTLOOP_TRAINER_MAX_EXAMPLES="5000", CTLOOP_MONITOR_JOIN_TTL_S=str(JOIN_TTL_S)
    )
    yield running
    stop_stack(running)


def lag(stack: Stack) -> float:
    total = 0.0
    for service in ("monitor", "trainer", "ingest"):
        text = httpx.get(f"{stack.url(service)}/metrics", timeout=5).text
        total += sum(float(v) for v in re.findall(r"^ctloop_consumer_lag\{[^}]*\} ([\d.e+]+)$", text, re.M))
    return total


def join_waiting(stack: Stack) -> float:
    text = httpx.get(f"{stack.url('monitor')}/metrics", timeout=5).text
    return float(re.findall(r"^ctloop_monitor_join_waiting ([\d.e+]+)$", text, re.M)[0])


def test_sustained_load_with_a_drift_and_a_swap(stack: Stack) -> None:
    pids = {name: process.pid for name, process in stack.processes.items()}
    sampler = RssSampler(pids, every_s=1.0)
    sampler.start()
    stop = threading.Event()
    ingest_stats = {"batches": 0, "failed": 0}

    def side_ingest() -> None:
        stream = ConceptStream(seed=99, drift_at=10**9, prefix="soak")
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                batch = [record for record, _ in stream.take(100)]
                response = http.post(
                    f"{stack.url('ingest')}/v1/records",
                    json={"records": batch},
                    headers=stack.auth("producer"),
                )
                ingest_stats["batches"] += 1
                ingest_stats["failed"] += response.status_code != 200
                stop.wait(1.0)  # 100 records/s beside the demo's 300

    writer = threading.Thread(target=side_ingest)
    writer.start()
    half = RECORDS // 2
    try:
        config = DemoConfig(drift_at=half, after_swap=half, timeout_s=RECORDS / 300 * 2 + 300)
        report = run_demo(stack, config, say=lambda _: None)
    finally:
        stop.set()
        writer.join(60)
    wait_for(lambda: lag(stack) == 0, "consumer lag back to zero", timeout_s=300)
    # Then every partition is idle: the halves of joins still waiting (the side load's records
    # are never labelled) must expire on their own, with no event to trigger it.
    wait_for(lambda: join_waiting(stack) == 0, "idle joins to expire", timeout_s=JOIN_TTL_S * 6)
    sampler.done.set()
    sampler.join(10)

    assert report.closed, report.reason
    assert report.failed_requests == 0 and ingest_stats["failed"] == 0
    assert report.accuracy_after_swap is not None and report.accuracy_after_swap > 0.85
    # memory levels off: the last quarter of the run holds no more than the second quarter
    # plus a little (a leak grows with traffic; caches and arenas fill once)
    samples = sampler.samples
    quarter = len(samples) // 4
    lines = []
    for name in pids:
        second = statistics.median(s[name] for _, s in samples[quarter : 2 * quarter])
        last = statistics.median(s[name] for _, s in samples[3 * quarter :])
        lines.append(f"{name} {second:.0f} -> {last:.0f} MiB")
        assert last <= second * 1.15 + 10, f"{name} kept growing: {second:.0f} -> {last:.0f} MiB"
    print(
        f"soak: {len(samples)} s sampled, {RECORDS} predicted records, {ingest_stats['batches']} side "
        f"batches, drift->swap {report.drift_to_swap_records} records; RSS " + ", ".join(lines)
    )
