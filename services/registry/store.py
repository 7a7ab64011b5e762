"""The registry's metadata store (SQLAlchemy): versions, aliases and their history, and the
event outbox.

Every change of state is one transaction that also writes its `models` event to the outbox
table; `OutboxRelay` sends those to Kafka afterwards. So no event is lost while the broker is
down, and none is sent for a change that rolled back. Version numbers and alias rows are
protected by unique keys, so two registry replicas on one PostgreSQL database stay consistent:
a writer that loses a race retries.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import topics
from shared.events import ModelPromoted, ModelRegistered, Source, encode_event
from shared.registry_api import AliasChange, ModelSummary, ModelVersion, VersionMetadata
from shared.signing import PREFIX, Signer, legacy_hmac_valid

metadata_obj = MetaData()

versions = Table(
    "versions",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(80), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("metadata", Text, nullable=False),
    UniqueConstraint("model_name", "version", name="uq_model_version"),
)

aliases = Table(
    "aliases",
    metadata_obj,
    Column("model_name", String(64), primary_key=True),
    Column("alias", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("alias", String(32), nullable=False),
    Column("version", Integer, nullable=True),
    Column("previous_version", Integer, nullable=True),
    Column("reason", String(200), nullable=False),
    Column("correlation_id", String(64), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(32), nullable=True),
)

outbox = Table(
    "outbox",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False, server_default=""),
    Column("topic", String(128), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)

evidence = Table(
    "evidence",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("model_name", String(64), nullable=False),
    Column("environment", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("correct", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("alarms", Integer, nullable=False, server_default="0"),
)

T = TypeVar("T")

OUTBOX_RELAY_LOCK = 0x6374_6C6F_6F71
"""PostgreSQL advisory lock key held by the replica relaying the outbox (migrate.py holds the
one below it)."""


class StoreConflict(ValueError):
    """A change that the current state forbids (e.g. promoting an archived version)."""


class _AliasRaced(Exception):
    """Another writer moved the alias between this transaction's read and its update: read
    again (a conditional change then finds the alias moved and is refused)."""


class RegistryStore:
    def __init__(self, url: str, source: Source, signer: Signer) -> None:
        self.engine: Engine = create_engine(url)
        self.source = source
        self.signer = signer
        # NOTE: serializes this process's writes (SQLite has one writer anyway); writers in
        # other processes are kept apart by the unique keys and a retry.
        self._write_lock = threading.Lock()
        self.outbox_written = threading.Event()
        """Set after each committed write of this process, which may have added outbox rows:
        the relay in this process waits on it (other replicas' rows are found by its polling)."""

    # --- reads ---------------------------------------------------------------------------

    def _aliases_of(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(select(aliases.c.alias, aliases.c.version).where(aliases.c.model_name == name))
        return {alias: version for alias, version in rows}

    def _to_version(self, row: Row[Any], alias_map: dict[str, int]) -> ModelVersion:
        meta = VersionMetadata.model_validate_json(row.metadata)
        return ModelVersion(
            **meta.model_dump(),
            name=row.model_name,
            version=row.version,
            created_at=row.created_at,
            status=row.status,
            signature=row.signature,
            aliases=sorted(a for a, v in alias_map.items() if v == row.version),
        )

    def models(self) -> list[ModelSummary]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(versions.c.model_name, func.max(versions.c.version)).group_by(versions.c.model_name)
            ).all()
            return [
                ModelSummary(name=name, latest_version=latest, aliases=self._aliases_of(conn, name))
                for name, latest in rows
            ]

    def versions(self, name: str) -> list[ModelVersion]:
        with self.engine.connect() as conn:
            alias_map = self._aliases_of(conn, name)
            rows = conn.execute(
                select(versions).where(versions.c.model_name == name).order_by(versions.c.version)
            ).all()
            return [self._to_version(r, alias_map) for r in rows]

    def version(self, name: str, version: int) -> ModelVersion | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(versions).where(versions.c.model_name == name, versions.c.version == version)
            ).first()
            return None if row is None else self._to_version(row, self._aliases_of(conn, name))

    def alias(self, name: str, alias: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            target = self._aliases_of(conn, name).get(alias)
        return None if target is None else self.version(name, target)

    def history(self, name: str, version: int | None = None) -> list[AliasChange]:
        """Alias changes of a model (or of one version), oldest first."""
        query = select(alias_history).where(alias_history.c.model_name == name)
        if version is not None:
            query = query.where(
                (alias_history.c.version == version) | (alias_history.c.previous_version == version)
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(alias_history.c.id)).all()
        return [
            AliasChange(
                alias=r.alias,
                version=r.version,
                previous_version=r.previous_version,
                reason=r.reason,
                correlation_id=r.correlation_id,
                at=r.at,
                actor=r.actor,
            )
            for r in rows
        ]

    def has_been(self, name: str, alias: str, version: int) -> bool:
        """Whether `alias` ever pointed at `version` (history only grows: no race to fear)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(alias_history.c.id).where(
                    alias_history.c.model_name == name,
                    alias_history.c.alias == alias,
                    alias_history.c.version == version,
                )
            ).first()
        return found is not None

    def alias_since(self, name: str, alias: str) -> tuple[int, datetime] | None:
        """The version `alias` points at and when it was pointed there."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(aliases.c.version, aliases.c.updated_at).where(
                    aliases.c.model_name == name, aliases.c.alias == alias
                )
            ).first()
        if row is None:
            return None
        at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)  # SQLite
        return int(row.version), at

    def rolled_back(self, name: str, alias: str, version: int) -> bool:
        """Whether `version` was ever replaced at `alias` by an older version (a rollback)."""
        with self.engine.connect() as conn:
            return self._rolled_back(conn, name, version, alias)

    def events(self, name: str, limit: int = 500) -> list[str]:
        """The model's newest `limit` events as written (JSON envelopes), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.value)
                .where(outbox.c.model_name == name)
                .order_by(outbox.c.id.desc())
                .limit(limit)
            ).all()
        return [r.value for r in reversed(rows)]

    # --- writes --------------------------------------------------------------------------

    def _sign(self, name: str, number: int, meta: VersionMetadata) -> str:
        return self.signer.sign(name, number, meta.digest, meta.input_schema.model_dump(mode="json"))

    def resign_legacy(self, legacy_key: str) -> tuple[int, int]:
        """Re-sign, with the Ed25519 key, every version whose signature is the retired HMAC
        one and verifies under `legacy_key`; (re-signed, left as they were). A version whose
        HMAC does not verify keeps it, and every loader refuses it (its row was edited, or the
        key is not the one it was signed with)."""
        resigned = kept = 0
        with self._write_lock, self.engine.begin() as conn:
            rows = conn.execute(select(versions).where(~versions.c.signature.startswith(PREFIX))).all()
            for row in rows:
                if not legacy_hmac_valid(legacy_key, row.digest, row.signature):
                    kept += 1
                    continue
                meta = VersionMetadata.model_validate_json(row.metadata)
                conn.execute(
                    update(versions)
                    .where(versions.c.id == row.id)
                    .values(signature=self._sign(row.model_name, row.version, meta))
                )
                resigned += 1
        return resigned, kept

    def _retrying(self, change: Callable[[Connection], T], attempts: int = 10) -> T:
        """Run `change` in one transaction; retry when another writer won a race, after a
        short random pause so that two losers do not collide again in lockstep."""
        for attempt in range(attempts):
            try:
                with self._write_lock, self.engine.begin() as conn:
                    result = change(conn)
                self.outbox_written.set()
                return result
            except (IntegrityError, OperationalError, _AliasRaced) as exc:
                if attempt == attempts - 1:
                    if isinstance(exc, _AliasRaced):  # a 409 to the caller, not a 500
                        raise StoreConflict("the alias kept moving under other writers; try again") from exc
                    raise
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise AssertionError("unreachable")

    def _emit(
        self,
        conn: Connection,
        change: ModelRegistered | ModelPromoted,
        meta: VersionMetadata,
        correlation_id: str | None = None,
    ) -> None:
        _, event = encode_event(
            change,
            self.source,
            correlation_id=correlation_id or meta.lineage.correlation_id,
            causation_id=meta.lineage.trigger_event_id,
        )
        conn.execute(
            insert(outbox).values(
                model_name=change.model_name,
                topic=topics.MODELS,
                key=change.model_name,
                value=event.decode(),
                created_at=datetime.now(UTC),
            )
        )

    def _set_alias(
        self,
        conn: Connection,
        name: str,
        alias: str,
        version: int,
        meta: VersionMetadata,
        reason: str,
        correlation_id: str | None = None,
        replaces: int | None = None,
        actor: str | None = None,
    ) -> None:
        """Point `alias` at `version`. With `replaces`, only if the alias points at that version
        now (StoreConflict otherwise: someone moved it since the caller looked)."""
        previous = self._aliases_of(conn, name).get(alias)
        if replaces is not None and previous != replaces:
            where = f"v{previous}" if previous is not None else "nothing"
            raise StoreConflict(f"{alias} of {name} is {where} now, not v{replaces}: it moved; look again")
        now = datetime.now(UTC)
        if previous is None:
            conn.execute(
                insert(aliases).values(model_name=name, alias=alias, version=version, updated_at=now)
            )
        else:
            # NOTE: conditional on the version read above: two writers on PostgreSQL (READ
            # COMMITTED) both read the old row; the second's update then matches nothing and it
            # reads again instead of overwriting a change it never saw.
            moved = conn.execute(
                update(aliases)
                .where(aliases.c.model_name == name, aliases.c.alias == alias, aliases.c.version == previous)
                .values(version=version, updated_at=now)
            )
            if moved.rowcount != 1:
                raise _AliasRaced()
        conn.execute(
            insert(alias_history).values(
                model_name=name,
                alias=alias,
                version=version,
                previous_version=previous,
                reason=reason[:200],
                correlation_id=correlation_id or meta.lineage.correlation_id,
                at=now,
                actor=actor,
            )
        )
        change = ModelPromoted(
            model_name=name,
            version=version,
            alias=alias,
            previous_version=previous,
            digest=meta.digest,
            metrics=meta.metrics,
        )
        self._emit(conn, change, meta, correlation_id)

    def _row(self, conn: Connection, name: str, version: int) -> Row[Any] | None:
        return conn.execute(
            select(versions).where(versions.c.model_name == name, versions.c.version == version)
        ).first()

    def create_version(
        self,
        name: str,
        meta: VersionMetadata,
        promote_to: Sequence[str] | str | None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Register a new version (next number for `name`), optionally pointing aliases at it
        (in order: the environments it enters at once), in one transaction with its events."""
        chain = [promote_to] if isinstance(promote_to, str) else list(promote_to or ())

        def change(conn: Connection) -> int:
            latest = conn.execute(
                select(func.max(versions.c.version)).where(versions.c.model_name == name)
            ).scalar()
            number = (latest or 0) + 1
            conn.execute(
                insert(versions).values(
                    model_name=name,
                    version=number,
                    digest=meta.digest,
                    signature=self._sign(name, number, meta),
                    created_at=datetime.now(UTC),
                    metadata=meta.model_dump_json(),
                )
            )
            registered = ModelRegistered(
                model_name=name, version=number, digest=meta.digest, metrics=meta.metrics
            )
            self._emit(conn, registered, meta)
            for alias in chain:
                self._set_alias(
                    conn, name, alias, number, meta, reason=f"policy: {alias} on upload", actor=actor
                )
            return number

        number = self._retrying(change)
        created = self.version(name, number)
        assert created is not None
        return created

    def promote(
        self,
        name: str,
        version: int,
        alias: str,
        reason: str = "manual",
        correlation_id: str | None = None,
        replaces: int | None = None,
        override_rollback: bool = False,
        cascade: Sequence[str] = (),
        actor: str | None = None,
    ) -> ModelVersion | None:
        """Point `alias` at `version` (`replaces`: only if it points at that version now), then
        the `cascade` aliases too (the environments it enters automatically after this one),
        in one transaction. A version once rolled back from champion becomes champion again
        only with `override_rollback` (and never by a cascade)."""

        def change(conn: Connection) -> bool:
            row = self._row(conn, name, version)
            if row is None:
                return False
            if row.status == "archived":
                raise StoreConflict(f"{name} v{version} is archived and cannot be promoted")
            if alias == "champion" and not override_rollback and self._rolled_back(conn, name, version):
                raise StoreConflict(
                    f"{name} v{version} was rolled back from champion; promoting it again needs an "
                    "explicit override (override_rollback)"
                )
            meta = VersionMetadata.model_validate_json(row.metadata)
            self._set_alias(conn, name, alias, version, meta, reason, correlation_id, replaces, actor)
            previous = alias
            for following in cascade:
                if following == "champion" and self._rolled_back(conn, name, version):
                    break
                if self._aliases_of(conn, name).get(following) != version:
                    why = f"auto: reached {previous}"
                    self._set_alias(
                        conn, name, following, version, meta, why, correlation_id, actor="registry"
                    )
                previous = following
            return True

        return self.version(name, version) if self._retrying(change) else None

    def rollback(
        self,
        name: str,
        reason: str = "manual rollback",
        replaces: int | None = None,
        alias: str = "champion",
        actor: str | None = None,
    ) -> ModelVersion | None:
        """Point `alias` (an environment's) back at the version it pointed at before the
        current one was promoted. With `replaces`, only if the alias is that version now (two
        callers asking at once: one rolls back, the other is refused instead of flipping it
        back)."""

        def change(conn: Connection) -> int | None:
            current = self._aliases_of(conn, name).get(alias)
            if current is None:
                return None
            if replaces is not None and current != replaces:
                raise StoreConflict(
                    f"{alias} of {name} is v{current} now, not v{replaces}: it moved; look again"
                )
            rows = conn.execute(
                select(alias_history.c.version, alias_history.c.previous_version)
                .where(alias_history.c.model_name == name, alias_history.c.alias == alias)
                .order_by(alias_history.c.id.desc())
            ).all()
            # The newest promotion that made the current version champion (a move forward, not
            # a rollback to it) says what came before; so a second rollback goes further back
            # rather than returning to the version just rolled back.
            previous = next((p for v, p in rows if v == current and p is not None and p < v), None)
            if previous is None:
                raise StoreConflict(f"{name} has no earlier {alias} to roll back to")
            row = self._row(conn, name, previous)
            if row is None:  # versions are never deleted; a history naming none is corrupt
                raise StoreConflict(f"{name} v{previous}, the earlier {alias}, is not in the registry")
            meta = VersionMetadata.model_validate_json(row.metadata)
            self._set_alias(conn, name, alias, previous, meta, reason, replaces=current, actor=actor)
            return int(previous)

        target = self._retrying(change)
        return None if target is None else self.version(name, target)

    def _rolled_back(self, conn: Connection, name: str, version: int, alias: str = "champion") -> bool:
        """Whether `version` was ever replaced at `alias` by an older version (a rollback, by a
        person or the monitor)."""
        found = conn.execute(
            select(alias_history.c.id).where(
                alias_history.c.model_name == name,
                alias_history.c.alias == alias,
                alias_history.c.previous_version == version,
                alias_history.c.version < version,
            )
        ).first()
        return found is not None

    def archive(self, name: str, version: int) -> ModelVersion | None:
        def change(conn: Connection) -> bool:
            row = self._row(conn, name, version)
            if row is None:
                return False
            if version in self._aliases_of(conn, name).values():
                raise StoreConflict(f"{name} v{version} is behind an alias; move the alias first")
            conn.execute(update(versions).where(versions.c.id == row.id).values(status="archived"))
            return True

        return self.version(name, version) if self._retrying(change) else None

    # --- evidence ---------------------------------------------------------------------------

    def add_evidence(
        self,
        event_id: str,
        name: str,
        environment: str,
        version: int,
        labelled: int = 0,
        correct: int = 0,
        alarms: int = 0,
    ) -> bool:
        """Record a monitor's measurement or alarm once (keyed by its event id); whether it
        was new."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(evidence).values(
                        event_id=event_id,
                        model_name=name,
                        environment=environment,
                        version=version,
                        labelled=labelled,
                        correct=correct,
                        alarms=alarms,
                        at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            return False  # read twice (at-least-once delivery): counted already
        return True

    def labelled(self, name: str, environment: str, version: int) -> int:
        """Labelled predictions `version` made in `environment`, as its monitors measured."""
        return self._evidence_sum(evidence.c.labelled, name, environment, version)

    def alarms(self, name: str, environment: str, version: int) -> int:
        """Drift alarms the monitor of `environment` raised while `version` served there."""
        return self._evidence_sum(evidence.c.alarms, name, environment, version)

    def _evidence_sum(self, column: Column[int], name: str, environment: str, version: int) -> int:
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(column), 0)).where(
                    evidence.c.model_name == name,
                    evidence.c.environment == environment,
                    evidence.c.version == version,
                )
            ).scalar()
        return int(total or 0)

    # --- outbox --------------------------------------------------------------------------

    def relay(self, send: Callable[[list[tuple[int, str, str, str]]], list[int]], limit: int = 100) -> int:
        """Claim up to `limit` unsent events, hand them to `send` (which returns the ids it
        delivered, in order), and mark those sent, all in one transaction.

        NOTE: on PostgreSQL one replica relays at a time (a transaction-scoped advisory lock;
        the others find it taken and relay next time), so events reach Kafka in the order they
        were written. SKIP LOCKED alone kept replicas from sending an event twice but not the
        order: a full test run saw `model.registered` v4 sent before v2 and v3, which another
        replica had claimed (test_registry_replicas). SQLite has a single writer anyway.
        """
        with self.engine.begin() as conn:
            if (
                conn.dialect.name == "postgresql"
                and not conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": OUTBOX_RELAY_LOCK}
                ).scalar()
            ):
                return 0
            rows = conn.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value)
                .where(outbox.c.sent_at.is_(None))
                .order_by(outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            sent = send([tuple(r) for r in rows])
            if sent:
                conn.execute(update(outbox).where(outbox.c.id.in_(sent)).values(sent_at=datetime.now(UTC)))
            return len(sent)

    def prune_outbox(self, keep: int) -> int:
        """Delete the sent events older than the newest `keep` (unsent ones always stay);
        how many went."""
        with self.engine.begin() as conn:
            cutoff = conn.execute(
                select(outbox.c.id).order_by(outbox.c.id.desc()).offset(keep).limit(1)
            ).scalar()
            if cutoff is None:
                return 0
            gone = conn.execute(delete(outbox).where(outbox.c.id <= cutoff, outbox.c.sent_at.is_not(None)))
            return int(gone.rowcount or 0)

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            return int(conn.execute(query).scalar() or 0)
