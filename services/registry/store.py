"""The registry's metadata store (SQLAlchemy): versions, aliases, and the event outbox.

Every change of state is one transaction that also writes its `models` event to the outbox
table; `OutboxRelay` sends those to Kafka afterwards. So no event is lost while the broker is
down, and none is sent for a change that rolled back.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

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
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from shared import topics
from shared.events import ModelChanged, Source, new_event
from shared.registry_api import ModelSummary, ModelVersion, VersionMetadata

metadata_obj = MetaData()

versions = Table(
    "versions",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(80), nullable=False),
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

outbox = Table(
    "outbox",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(128), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)


class RegistryStore:
    def __init__(self, url: str, source: Source) -> None:
        self.engine: Engine = create_engine(url)
        self.source = source
        # NOTE: serializes this process's writes; version numbers are also protected by the
        # unique constraint for writers in other processes.
        self._write_lock = threading.Lock()
        metadata_obj.create_all(self.engine)

    # --- reads ---------------------------------------------------------------------------

    def _aliases_of(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute(select(aliases.c.alias, aliases.c.version).where(aliases.c.model_name == name))
        return {alias: version for alias, version in rows}

    def _to_version(self, row: object, alias_map: dict[str, int]) -> ModelVersion:
        meta = VersionMetadata.model_validate_json(row.metadata)  # type: ignore[attr-defined]
        return ModelVersion(
            **meta.model_dump(),
            name=row.model_name,  # type: ignore[attr-defined]
            version=row.version,  # type: ignore[attr-defined]
            created_at=row.created_at,  # type: ignore[attr-defined]
            aliases=sorted(a for a, v in alias_map.items() if v == row.version),  # type: ignore[attr-defined]
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

    # --- writes --------------------------------------------------------------------------

    def _emit(self, conn: Connection, event_type: str, change: ModelChanged, meta: VersionMetadata) -> None:
        event = new_event(
            event_type,
            change,
            self.source,
            correlation_id=meta.lineage.correlation_id,
            causation_id=meta.lineage.trigger_event_id,
        )
        conn.execute(
            insert(outbox).values(
                topic=topics.MODELS,
                key=change.model_name,
                value=event.model_dump_json(),
                created_at=datetime.now(UTC),
            )
        )

    def _set_alias(
        self, conn: Connection, name: str, alias: str, version: int, meta: VersionMetadata
    ) -> None:
        previous = self._aliases_of(conn, name).get(alias)
        now = datetime.now(UTC)
        if previous is None:
            conn.execute(
                insert(aliases).values(model_name=name, alias=alias, version=version, updated_at=now)
            )
        else:
            conn.execute(
                update(aliases)
                .where(aliases.c.model_name == name, aliases.c.alias == alias)
                .values(version=version, updated_at=now)
            )
        change = ModelChanged(
            model_name=name,
            version=version,
            alias=alias,
            previous_version=previous,
            digest=meta.digest,
            metrics=meta.metrics,
        )
        self._emit(conn, "model.promoted", change, meta)

    def create_version(self, name: str, meta: VersionMetadata, promote_to: str | None) -> ModelVersion:
        """Register a new version (next number for `name`), optionally pointing an alias at it,
        in one transaction with its events."""
        with self._write_lock, self.engine.begin() as conn:
            latest = conn.execute(
                select(func.max(versions.c.version)).where(versions.c.model_name == name)
            ).scalar()
            number = (latest or 0) + 1
            conn.execute(
                insert(versions).values(
                    model_name=name,
                    version=number,
                    digest=meta.digest,
                    created_at=datetime.now(UTC),
                    metadata=meta.model_dump_json(),
                )
            )
            change = ModelChanged(model_name=name, version=number, digest=meta.digest, metrics=meta.metrics)
            self._emit(conn, "model.registered", change, meta)
            if promote_to:
                self._set_alias(conn, name, promote_to, number, meta)
        created = self.version(name, number)
        assert created is not None
        return created

    def promote(self, name: str, version: int, alias: str) -> ModelVersion | None:
        with self._write_lock, self.engine.begin() as conn:
            row = conn.execute(
                select(versions).where(versions.c.model_name == name, versions.c.version == version)
            ).first()
            if row is None:
                return None
            meta = VersionMetadata.model_validate_json(row.metadata)
            self._set_alias(conn, name, alias, version, meta)
        return self.version(name, version)

    # --- outbox --------------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[tuple[int, str, str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value)
                .where(outbox.c.sent_at.is_(None))
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def mark_sent(self, ids: list[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=datetime.now(UTC)))
