"""The registry store's suite, run the same on SQLite and on the real PostgreSQL server at
127.0.0.1:5432: migrations, numbering, aliases and history, rollback, archive, concurrent
replicas (separate engines) and the outbox claimed by several relays."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from services.registry.migrate import head_revision, migrate
from services.registry.outbox import OutboxRelay
from services.registry.store import RegistryStore, StoreConflict
from shared.events import Envelope, Source
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.signing import LEGACY_PREFIX, SignatureRefused, Signer, Verifier, generate_keypair
from tests.fixtures import demo_schema
from tests.integration.conftest import postgres_database

pytestmark = pytest.mark.integration

PRIVATE, PUBLIC = generate_keypair()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        with postgres_database() as database:
            yield database


def store_for(url: str, instance: str = "t") -> RegistryStore:
    store = RegistryStore(url, Source(service="registry", instance=instance), signer=Signer(PRIVATE))
    migrate(store.engine)
    return store


def metadata(n: int, correlation: str | None = None) -> VersionMetadata:
    return VersionMetadata(
        digest="sha256:" + f"{n:064x}",
        input_schema=demo_schema(),
        metrics={"accuracy": 0.9},
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(
            run_id=f"run-{n}", trigger="drift", trigger_event_id=f"drift-{n}", correlation_id=correlation
        ),
    )


def test_migrations_create_the_schema(url: str) -> None:
    store = store_for(url)
    migrate(store.engine)  # idempotent
    tables = set(inspect(store.engine).get_table_names())
    assert {"versions", "aliases", "alias_history", "outbox", "evidence", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()


def test_versions_aliases_history_rollback_archive(url: str) -> None:
    store = store_for(url)
    v1 = store.create_version("demo", metadata(1, "loop-1"), promote_to="champion")
    v2 = store.create_version("demo", metadata(2, "loop-2"), promote_to="champion")
    v3 = store.create_version("demo", metadata(3), promote_to="challenger")
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    Verifier(PUBLIC).check("demo", 2, v2.digest, v2.input_schema.model_dump(mode="json"), v2.signature)
    assert store.alias("demo", "champion").version == 2  # type: ignore[union-attr]
    assert store.alias("demo", "challenger").version == 3  # type: ignore[union-attr]

    rolled = store.rollback("demo", "v2 underperforms")
    assert rolled is not None and rolled.version == 1 and "champion" in rolled.aliases
    history = [(h.alias, h.version, h.previous_version, h.reason) for h in store.history("demo")]
    assert history == [
        ("champion", 1, None, "policy: champion on upload"),
        ("champion", 2, 1, "policy: champion on upload"),
        ("challenger", 3, None, "policy: challenger on upload"),
        ("champion", 1, 2, "v2 underperforms"),
    ]
    with pytest.raises(StoreConflict, match="behind an alias"):
        store.archive("demo", 3)
    archived = store.archive("demo", 2)
    assert archived is not None and archived.status == "archived"
    with pytest.raises(StoreConflict, match="archived"):
        store.promote("demo", 2, "champion")
    assert store.promote("demo", 99, "champion") is None

    events = [Envelope.model_validate_json(e) for e in store.events("demo")]
    assert [e.type for e in events].count("model.registered") == 3
    promoted_v2 = next(e for e in events if e.type == "model.promoted" and e.payload["version"] == 2)
    assert promoted_v2.correlation_id == "loop-2" and promoted_v2.causation_id == "drift-2"


def test_replicas_never_reuse_a_number_and_keep_one_champion(url: str) -> None:
    replicas = [store_for(url, instance=f"r{i}") for i in range(2)]
    numbers: list[int] = []
    errors: list[BaseException] = []

    def upload(replica: RegistryStore, start: int) -> None:
        try:
            for i in range(start, start + 10):
                numbers.append(replica.create_version("race", metadata(i), promote_to="champion").version)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(r, k * 100)) for k, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(numbers) == list(range(1, 21))  # unique, never reused

    def promote(replica: RegistryStore, version: int) -> None:
        # in any order: moving back over a newer version rolls it back, hence the override
        replica.promote("race", version, "champion", f"race {version}", override_rollback=True)

    threads = [threading.Thread(target=promote, args=(replicas[v % 2], v)) for v in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with replicas[0].engine.connect() as conn:
        rows = conn.execute(
            text("SELECT version FROM aliases WHERE model_name='race' AND alias='champion'")
        ).all()
    assert len(rows) == 1  # exactly one champion
    assert replicas[1].alias("race", "champion").version == rows[0][0]  # type: ignore[union-attr]


def test_two_rollbacks_at_once_make_one_change_and_one_refusal(url: str) -> None:
    replicas = [store_for(url, instance=f"r{i}") for i in range(2)]
    for n in (1, 2, 3):
        replicas[0].create_version("demo", metadata(n), promote_to="champion")
    start = threading.Barrier(2)
    outcomes: list[object] = []

    def roll_back(replica: RegistryStore) -> None:
        start.wait()
        try:
            outcomes.append(replica.rollback("demo", "v3 underperforms", replaces=3))
        except StoreConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=roll_back, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [o for o in outcomes if not isinstance(o, StoreConflict)]
    refused = [o for o in outcomes if isinstance(o, StoreConflict)]
    assert len(done) == 1 and len(refused) == 1, outcomes
    assert "moved" in str(refused[0])
    assert replicas[1].alias("demo", "champion").version == 2  # type: ignore[union-attr]
    rollbacks = [h for h in replicas[0].history("demo") if h.reason == "v3 underperforms"]
    assert len(rollbacks) == 1

    # An unconditional rollback from v2 goes further back, never back to the v3 just left.
    assert replicas[0].rollback("demo", "and v2 too").version == 1  # type: ignore[union-attr]


def test_a_rolled_back_version_needs_an_override_and_a_moved_alias_refuses(url: str) -> None:
    store = store_for(url)
    for n in (1, 2):
        store.create_version("demo", metadata(n), promote_to="champion")
    store.rollback("demo", "v2 underperforms", replaces=2)
    with pytest.raises(StoreConflict, match="rolled back from champion"):
        store.promote("demo", 2, "champion", "try again")
    with pytest.raises(StoreConflict, match="champion of demo is v1 now, not v2"):
        store.promote("demo", 2, "champion", "try again", replaces=2, override_rollback=True)
    again = store.promote("demo", 2, "champion", "fixed upstream", replaces=1, override_rollback=True)
    assert again is not None and "champion" in again.aliases
    store.create_version("demo", metadata(3), promote_to=None)
    assert store.promote("demo", 3, "staging", "first", replaces=None) is not None  # a new alias


def test_outbox_relayed_once_by_several_relays(url: str) -> None:
    # Several registry replicas are a PostgreSQL set-up (rows are claimed with SKIP LOCKED);
    # SQLite has no row locks and is the single-replica default, so it runs one relay.
    replicas = [store_for(url, instance=f"r{i}") for i in range(2 if url.startswith("postgresql") else 1)]
    for i in range(30):
        replicas[i % len(replicas)].create_version(
            "outbox", metadata(i), promote_to="champion" if i % 3 == 0 else None
        )
    sent: list[int] = []
    lock = threading.Lock()

    def send(rows: list[tuple[int, str, str, str]]) -> list[int]:
        with lock:
            sent.extend(r[0] for r in rows)
        return [r[0] for r in rows]

    def relay(store: RegistryStore) -> None:
        while store.relay(send, limit=7):
            continue  # until a pass finds nothing left to claim

    threads = [threading.Thread(target=relay, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(sent)
    assert len(counts) == 40 and set(counts.values()) == {1}  # 30 registered + 10 promoted, once each
    assert replicas[0].pending_count() == 0


def test_a_failed_send_keeps_the_rest_in_order(url: str) -> None:
    store = store_for(url)
    for i in range(3):
        store.create_version("order", metadata(i), promote_to=None)
    assert store.relay(lambda rows: [rows[0][0]]) == 1  # the broker took only the first
    assert store.pending_count() == 2
    assert store.relay(lambda rows: []) == 0 and store.pending_count() == 2


def test_a_change_that_rolls_back_emits_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_for(url)
    store.create_version("atomic", metadata(1), promote_to="champion")
    before = (len(store.versions("atomic")), len(store.events("atomic")))

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash after the version row and its event were written")

    monkeypatch.setattr(store, "_set_alias", crash)  # fails inside the registering transaction
    with pytest.raises(RuntimeError, match="crash after"):
        store.create_version("atomic", metadata(2), promote_to="champion")
    assert (len(store.versions("atomic")), len(store.events("atomic"))) == before
    assert store.alias("atomic", "champion").version == 1  # type: ignore[union-attr]


def test_the_outbox_keeps_unsent_events_and_the_newest_sent_ones(url: str) -> None:
    store = store_for(url)
    for n in range(1, 7):  # 12 events: registered + promoted each
        store.create_version("demo", metadata(n), promote_to="champion")
    assert store.prune_outbox(keep=3) == 0  # nothing sent yet: nothing may go
    store.relay(lambda rows: [r[0] for r in rows[:8]])  # the broker took the oldest 8
    assert store.prune_outbox(keep=3) == 8  # all sent ones older than the newest 3 rows
    assert store.pending_count() == 4
    newest = [Envelope.model_validate_json(e) for e in store.events("demo", limit=2)]
    assert [(e.type, e.payload["version"]) for e in newest] == [
        ("model.registered", 6),
        ("model.promoted", 6),
    ]


def test_versions_signed_with_the_retired_hmac_key_are_re_signed_once(url: str) -> None:
    store = store_for(url)
    good, edited = (store.create_version("demo", metadata(n), promote_to=None) for n in (11, 12))
    old_key = "the-old-hmac-signing-key-0123"
    with store.engine.begin() as conn:  # as a registry before Ed25519 left them
        for version, signed_digest in ((good, good.digest), (edited, "sha256:" + "f" * 64)):
            legacy = (
                LEGACY_PREFIX + hmac.new(old_key.encode(), signed_digest.encode(), hashlib.sha256).hexdigest()
            )
            conn.execute(
                text("UPDATE versions SET signature = :s WHERE version = :v"),
                {"s": legacy, "v": version.version},
            )
    check = Verifier(PUBLIC)
    stale = store.version("demo", good.version)
    assert stale is not None
    with pytest.raises(SignatureRefused, match="retired HMAC signature; restart the registry once"):
        check.check(
            "demo", stale.version, stale.digest, stale.input_schema.model_dump(mode="json"), stale.signature
        )

    assert store.resign_legacy(old_key) == (1, 1)  # the edited row's HMAC does not verify: kept
    for version, valid in ((good, True), (edited, False)):
        found = store.version("demo", version.version)
        assert found is not None
        schema = found.input_schema.model_dump(mode="json")
        if valid:
            check.check("demo", found.version, found.digest, schema, found.signature)
        else:
            with pytest.raises(SignatureRefused):
                check.check("demo", found.version, found.digest, schema, found.signature)
    assert store.resign_legacy(old_key) == (0, 1)  # idempotent


def test_replicas_starting_together_migrate_one_after_the_other() -> None:
    """Four registries starting at once on one new PostgreSQL database all come up. Without
    the migration lock, two replicas failed (a table created twice) or, here, all four hung
    (deadlocked upgrades) for more than 60 s; with it, all are migrated within about a second."""
    with postgres_database() as database:
        errors: list[BaseException] = []

        def start() -> None:
            try:
                store_for(database)
            except BaseException as exc:  # the test reports whatever went wrong
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [] and not any(thread.is_alive() for thread in threads)


class _Acknowledged:
    """What `KafkaProducer.send` returns, already acknowledged."""

    def get(self, timeout: float) -> None:
        return None


class _Producer:
    """Records what the relay sends; every send is acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _Acknowledged:
        self.sent.append(Envelope.model_validate_json(value).type)
        return _Acknowledged()


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_write_wakes_the_relay_long_before_its_next_poll(url: str) -> None:
    store, producer = store_for(url), _Producer()
    relay = OutboxRelay(store, producer, keep=100, interval_s=120)
    worker = threading.Thread(target=relay.run)
    worker.start()
    try:
        store.create_version("wake", metadata(1), promote_to="champion")
        assert wait_for(lambda: len(producer.sent) == 2, 60), producer.sent  # its first pass
        store.create_version("wake", metadata(2), promote_to="champion")
        # well inside the 120 s poll that follows an empty pass: the write itself woke it
        assert wait_for(lambda: len(producer.sent) == 4, 60), producer.sent
        assert producer.sent == ["model.registered", "model.promoted"] * 2
    finally:
        relay.stop()
        worker.join(60)
    assert not worker.is_alive()  # stop wakes it too
