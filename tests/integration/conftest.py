"""Integration fixtures: a real stack (embedded Tansu and five service processes on free
ports) and a reader that waits on a topic for a condition, with generous deadlines."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from services.supervisor import LOOP_SERVICES, Stack
from shared.events import BadEvent, Envelope
from shared.kafka import make_consumer
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.settings import CommonSettings
from tests.fixtures import demo_artifact, demo_schema

pytestmark = pytest.mark.integration

POSTGRES = "postgresql+psycopg://{user}@127.0.0.1:5432/{database}"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on 127.0.0.1:5432 (trust auth; `test` must exist), as a
    SQLAlchemy URL; dropped afterwards."""
    admin: tuple[Engine, str] | None = None
    for user in ("postgres", "root"):
        try:
            engine = create_engine(POSTGRES.format(user=user, database="test"), isolation_level="AUTOCOMMIT")
            engine.connect().close()
            admin = (engine, user)
            break
        except Exception:
            continue
    if admin is None:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 (database test, trust auth) is not reachable")
    engine, user = admin
    name = f"ctloop_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES.format(user=user, database=name)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def start_stack(
    folder: Path,
    services: tuple[str, ...] = LOOP_SERVICES,
    replicas: dict[str, int] | None = None,
    **env: str,
) -> Stack:
    log = (folder / "stack.log").open("w")
    stack = Stack(
        env={"CTLOOP_DATA_DIR": str(folder), "CTLOOP_TOPIC_PARTITIONS": "3", **env},
        free_ports=True,
        out=log,
        services=services,
        replicas=replicas,
    )
    stack.log_path = folder / "stack.log"  # type: ignore[attr-defined]
    return stack.start(timeout_s=240)


def stop_stack(stack: Stack) -> None:
    stack.stop()
    lines = stack.log_path.read_text().splitlines()  # type: ignore[attr-defined]
    print("\n--- last lines of the stack log ---\n" + "\n".join(lines[-80:]))


def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[Envelope]], bool], timeout_s: float = 90.0
) -> list[Envelope]:
    """Every envelope on `topic` from the start, until `until(events)` holds."""
    consumer = make_consumer(
        CommonSettings(kafka_bootstrap=bootstrap), f"test-{uuid.uuid4().hex[:8]}", [topic]
    )
    events: list[Envelope] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(events):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition on {topic} not met in {timeout_s}s; saw {len(events)} events"
                )
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    with contextlib.suppress(BadEvent):  # the raw topic holds bare records
                        events.append(Envelope.decode(message.value))
    finally:
        consumer.close()
    return events


def read_all(
    bootstrap: str,
    topic: str,
    expect: Callable[[list[Envelope]], bool],
    quiet_s: float = 3.0,
    timeout_s: float = 90.0,
) -> list[Envelope]:
    """Every envelope on `topic`: first until `expect(events)` holds, then on until nothing new
    has come for `quiet_s` (so that a late duplicate would be seen)."""
    last = [0, time.monotonic()]

    def settled(events: list[Envelope]) -> bool:
        if len(events) != last[0]:
            last[0], last[1] = len(events), time.monotonic()
        return expect(events) and time.monotonic() - last[1] > quiet_s

    return read_topic(bootstrap, topic, settled, timeout_s)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 90.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def restart(stack: Stack, service: str) -> None:
    """SIGKILL the service (no chance to clean up) and start it again; wait until it answers."""
    process = stack.processes[service]
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    stack.spawn(service)
    wait_for(lambda: _live(stack, service), f"{service} to come back", timeout_s=120)


def health(url: str) -> dict[str, object]:
    """A service's `/healthz` answer ({} while it does not answer): readiness, and what each
    service adds (serving's model version, a trainer's `active`)."""
    try:
        found: dict[str, object] = httpx.get(f"{url}/healthz", timeout=5).json()
        return found
    except (httpx.HTTPError, ValueError):
        return {}


def _live(stack: Stack, service: str) -> bool:
    try:
        return httpx.get(f"{stack.url(service)}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)


def upload_demo(
    stack: Stack,
    name: str = "demo",
    seed: int = 1,
    rows: int = 200,
    passed: bool = True,
    correlation: str | None = None,
    trigger: str = "manual",
    estimator: str = "sklearn.linear_model.LogisticRegression",
    params: dict[str, object] | None = None,
) -> dict:
    """Register a small trained demo model through the stack's registry's HTTP API (with the
    trainer's token, as the trainer uploads); the version as JSON."""
    artifact, digest = demo_artifact(rows=rows, seed=seed, estimator=estimator, params=params)
    meta = VersionMetadata(
        digest=digest,
        input_schema=demo_schema().model_copy(update={"name": name}),
        gate_report=GateReport(passed=passed, gates=[]),
        metrics={"accuracy": 0.9},
        lineage=Lineage(run_id=f"run-{seed}", trigger=trigger, correlation_id=correlation),
    )
    response = httpx.post(
        f"{stack.url('registry')}/v1/models/{name}/versions",
        headers={"Authorization": f"Bearer {stack.token('trainer')}"},
        files={"artifact": ("model.skops", artifact)},
        data={"metadata": meta.model_dump_json()},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
