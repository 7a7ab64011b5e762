"""The console's history (SQLAlchemy; SQLite by default, PostgreSQL when configured): the
lifecycle events, each tested window, live-accuracy measurements, dead letters and the
operators' actions, kept past the topics' retention.

Events are written idempotently (the event id is the key), so the follower can commit after
the write and a batch read twice changes nothing. The wide per-window payload (histograms) is
kept with the event; the figures the charts draw are copied into narrow tables so that a chart
over 10,000 windows reads a few columns, not 10,000 JSON documents.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    create_engine,
    delete,
    desc,
    func,
    select,
)
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row

from shared.events import DeadLetter, Envelope, QualityMeasured, WindowTested

metadata_obj = MetaData()

events = Table(
    "events",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("type", String(40), nullable=False),
    Column("occurred_at", Float, nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("causation_id", String(64)),
    Column("source", String(200), nullable=False),
    Column("model_name", String(64)),
    Column("version", Integer),
    Column("payload", Text, nullable=False),
    Index("ix_events_type_time", "type", "occurred_at"),
    Index("ix_events_correlation", "correlation_id"),
)

windows = Table(
    "windows",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("occurred_at", Float, nullable=False),
    Column("window_end", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reference_version", Integer),
    Column("size", Integer, nullable=False),
    Column("drifted", Boolean, nullable=False),
    Column("alpha", Float, nullable=False),
    Column("min_effect", Float, nullable=False),
    Index("ix_windows_time", "occurred_at"),
    Index("ix_windows_kind_end", "kind", "window_end"),
)

window_features = Table(
    "window_features",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("feature", String(200), primary_key=True),
    Column("occurred_at", Float, nullable=False),
    Column("test", String(40), nullable=False),
    Column("statistic", Float, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("adjusted_p_value", Float),
    Column("effect", Float, nullable=False),
    Column("drifted", Boolean, nullable=False),
    Index("ix_window_features_feature_time", "feature", "occurred_at"),
)

quality = Table(
    "quality",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("occurred_at", Float, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("correct", Integer, nullable=False),
    Column("challenger_version", Integer),
    Column("shadow_labelled", Integer, nullable=False),
    Column("shadow_champion_correct", Integer, nullable=False),
    Column("shadow_challenger_correct", Integer, nullable=False),
    Index("ix_quality_time", "occurred_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata_obj,
    Column("event_id", String(64), primary_key=True),
    Column("occurred_at", Float, nullable=False),
    Column("origin", String(200), nullable=False),
    Column("field", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("original", Text, nullable=False),
    Column("source", String(200), nullable=False),
    Index("ix_dead_letters_time", "occurred_at"),
)

actions = Table(
    "actions",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("operator", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("target", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("outcome", Text, nullable=False),
)

LIFECYCLE = (
    "drift.detected",
    "training.started",
    "training.completed",
    "training.failed",
    "model.registered",
    "model.promoted",
    "model.swapped",
    "model.swap_failed",
)
"""The event types a loop is made of, in the order they happen."""


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    type: str
    occurred_at: float
    correlation_id: str
    causation_id: str | None
    source: str
    model_name: str | None
    version: int | None
    payload: dict[str, Any]

    @classmethod
    def of(cls, row: Row[Any]) -> StoredEvent:
        return cls(
            event_id=row.event_id,
            type=row.type,
            occurred_at=row.occurred_at,
            correlation_id=row.correlation_id,
            causation_id=row.causation_id,
            source=row.source,
            model_name=row.model_name,
            version=row.version,
            payload=json.loads(row.payload),
        )


def _sqlite_wal(connection: Any, _record: Any) -> None:
    # Pages read while the follower writes: in WAL mode readers never wait for the writer.
    connection.execute("PRAGMA journal_mode=WAL")


def _insert(engine: Engine, table: Table) -> Any:
    """An INSERT that skips rows whose key is already there (a batch read twice)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class ConsoleStore:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            sqlalchemy_event.listen(self.engine, "connect", _sqlite_wal)
        metadata_obj.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- writes (the follower) ----------------------------------------------------------

    def add(self, envelopes: Iterable[Envelope]) -> None:
        """Store valid events in one transaction; events already stored are skipped."""
        rows: dict[Table, list[dict[str, Any]]] = {
            events: [],
            windows: [],
            window_features: [],
            quality: [],
            dead_letters: [],
        }
        for event in envelopes:
            self._rows(event, rows)
        with self.engine.begin() as conn:
            for table, table_rows in rows.items():
                if table_rows:
                    conn.execute(_insert(self.engine, table), table_rows)

    def _rows(self, event: Envelope, rows: dict[Table, list[dict[str, Any]]]) -> None:
        at = event.occurred_at.timestamp()
        payload = event.parsed()
        source = f"{event.source.service}/{event.source.instance}"
        if isinstance(payload, DeadLetter):
            first = payload.errors[0] if payload.errors else None
            rows[dead_letters].append(
                {
                    "event_id": event.event_id,
                    "occurred_at": at,
                    "origin": payload.origin[:200],
                    "field": (first.field if first else "")[:200],
                    "reason": "; ".join(e.reason for e in payload.errors),
                    "original": payload.original,
                    "source": source[:200],
                }
            )
            return
        if isinstance(payload, QualityMeasured):
            rows[quality].append(
                {
                    "event_id": event.event_id,
                    "occurred_at": at,
                    **payload.model_dump(
                        include={
                            "model_version",
                            "labelled",
                            "correct",
                            "challenger_version",
                            "shadow_labelled",
                            "shadow_champion_correct",
                            "shadow_challenger_correct",
                        }
                    ),
                }
            )
            return
        if event.type not in LIFECYCLE and not isinstance(payload, WindowTested):
            return  # records, predictions, examples: not the console's business
        rows[events].append(
            {
                "event_id": event.event_id,
                "type": event.type,
                "occurred_at": at,
                "correlation_id": event.correlation_id,
                "causation_id": event.causation_id,
                "source": source[:200],
                "model_name": event.payload.get("model_name"),
                "version": event.payload.get("version") or event.payload.get("reference_version"),
                "payload": json.dumps(event.payload),
            }
        )
        if isinstance(payload, WindowTested):
            rows[windows].append(
                {
                    "event_id": event.event_id,
                    "occurred_at": at,
                    "window_end": payload.window_end.timestamp(),
                    "kind": payload.kind,
                    "reference_version": payload.reference_version,
                    "size": payload.size,
                    "drifted": payload.drifted,
                    "alpha": payload.alpha,
                    "min_effect": payload.min_effect,
                }
            )
            rows[window_features].extend(
                {
                    "event_id": event.event_id,
                    "feature": f.feature[:200],
                    "occurred_at": at,
                    "test": f.test,
                    "statistic": f.statistic,
                    "p_value": f.p_value,
                    "adjusted_p_value": f.adjusted_p_value,
                    "effect": f.effect,
                    "drifted": f.drifted,
                }
                for f in payload.features
            )

    def prune_dead_letters(self, keep: int) -> int:
        """Delete all but the newest `keep` dead letters; returns how many went."""
        with self.engine.begin() as conn:
            cutoff = conn.execute(
                select(dead_letters.c.occurred_at)
                .order_by(desc(dead_letters.c.occurred_at))
                .offset(keep)
                .limit(1)
            ).scalar()
            if cutoff is None:
                return 0
            return conn.execute(delete(dead_letters).where(dead_letters.c.occurred_at <= cutoff)).rowcount

    def record_action(self, operator: str, action: str, target: str, reason: str, outcome: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                actions.insert().values(
                    at=time.time(),
                    operator=operator,
                    action=action,
                    target=target,
                    reason=reason,
                    outcome=outcome,
                )
            )

    # --- reads (the pages) --------------------------------------------------------------

    def _floor(self, value: Any) -> Any:
        """floor() of a non-negative number in SQL: PostgreSQL's CAST rounds, SQLite's
        truncates (and SQLite may be built without floor())."""
        if self.engine.dialect.name == "sqlite":
            return cast(value, Integer)
        return cast(func.floor(value), Integer)

    def _all(self, query: Any) -> Sequence[Row[Any]]:
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def latest(self, types: Sequence[str], limit: int = 1) -> list[StoredEvent]:
        query = (
            select(events).where(events.c.type.in_(types)).order_by(desc(events.c.occurred_at)).limit(limit)
        )
        return [StoredEvent.of(r) for r in self._all(query)]

    def of_types(self, types: Sequence[str], since: float = 0.0) -> list[StoredEvent]:
        """Every event of these types since `since`, oldest first."""
        query = (
            select(events)
            .where(events.c.type.in_(types), events.c.occurred_at >= since)
            .order_by(events.c.occurred_at)
        )
        return [StoredEvent.of(r) for r in self._all(query)]

    def event(self, event_id: str) -> StoredEvent | None:
        rows = self._all(select(events).where(events.c.event_id == event_id))
        return StoredEvent.of(rows[0]) if rows else None

    def loop_ids(self, offset: int, limit: int) -> tuple[list[str], int]:
        """The correlation ids of the newest loops (by their first event), and how many in all."""
        first = (
            select(events.c.correlation_id, func.min(events.c.occurred_at).label("began"))
            .where(events.c.type.in_(LIFECYCLE))
            .group_by(events.c.correlation_id)
            .subquery()
        )
        ids = [
            r.correlation_id
            for r in self._all(select(first).order_by(desc(first.c.began)).offset(offset).limit(limit))
        ]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(first)).scalar() or 0
        return ids, int(total)

    def loop_events(self, correlation_ids: Sequence[str]) -> list[StoredEvent]:
        """The lifecycle events of these loops, oldest first."""
        query = (
            select(events)
            .where(events.c.correlation_id.in_(correlation_ids), events.c.type.in_(LIFECYCLE))
            .order_by(events.c.occurred_at)
        )
        return [StoredEvent.of(r) for r in self._all(query)]

    def feature_series(self, kind: str, points: int) -> Sequence[Row[Any]]:
        """Every tested column of windows of `kind` over time, oldest first, merged into at most
        `points` buckets of equal time per column: per bucket the last window's end, the lowest
        adjusted p-value and the largest effect (so a drifted window is never averaged away),
        how many windows drifted and how many there were.

        NOTE: merged in SQL: 10,000 windows of 5 columns drew a 3.5 MB page in 515 ms when every
        window was a point (benchmarks/bench_console.py); merged, the page stays small."""
        span = select(func.min(windows.c.window_end), func.max(windows.c.window_end)).where(
            windows.c.kind == kind
        )
        with self.engine.connect() as conn:
            first, last = conn.execute(span).one()
        if first is None:
            return []
        # a hair wider than span/points, so that the last window falls in bucket points-1
        width = max((last - first) / points * (1 + 1e-9), 1e-6)
        bucket = self._floor((windows.c.window_end - first) / width).label("bucket")
        query = (
            select(
                window_features.c.feature,
                bucket,
                func.max(windows.c.window_end).label("window_end"),
                func.min(func.coalesce(window_features.c.adjusted_p_value, window_features.c.p_value)).label(
                    "adjusted_p_value"
                ),
                func.max(window_features.c.effect).label("effect"),
                func.sum(cast(window_features.c.drifted, Integer)).label("drifted"),
                func.count().label("windows"),
                func.max(windows.c.alpha).label("alpha"),
                func.max(windows.c.min_effect).label("min_effect"),
            )
            .join(windows, windows.c.event_id == window_features.c.event_id)
            .where(windows.c.kind == kind)
            .group_by(window_features.c.feature, bucket)
            .order_by(window_features.c.feature, bucket)
        )
        return self._all(query)

    def windows_list(self, limit: int, drifted_only: bool = False) -> Sequence[Row[Any]]:
        query = select(windows).order_by(desc(windows.c.window_end)).limit(limit)
        if drifted_only:
            query = query.where(windows.c.drifted.is_(True))
        return self._all(query)

    def quality_since(self, since: float) -> Sequence[Row[Any]]:
        return self._all(
            select(quality).where(quality.c.occurred_at >= since).order_by(quality.c.occurred_at)
        )

    def latest_dead_letters(self, limit: int) -> Sequence[Row[Any]]:
        return self._all(select(dead_letters).order_by(desc(dead_letters.c.occurred_at)).limit(limit))

    def dead_letter_counts(self, since: float, bucket_s: int) -> Sequence[Row[Any]]:
        """(bucket start, origin, count) of the dead letters since `since`."""
        bucket = (self._floor(dead_letters.c.occurred_at / bucket_s) * bucket_s).label("bucket")
        query = (
            select(bucket, dead_letters.c.origin, func.count().label("n"))
            .where(dead_letters.c.occurred_at >= since)
            .group_by(bucket, dead_letters.c.origin)
            .order_by(bucket)
        )
        return self._all(query)

    def dead_letter_reasons(self, limit: int) -> Sequence[Row[Any]]:
        """(origin, field, reason, count, last) of the most frequent reasons."""
        query = (
            select(
                dead_letters.c.origin,
                dead_letters.c.field,
                dead_letters.c.reason,
                func.count().label("n"),
                func.max(dead_letters.c.occurred_at).label("last"),
            )
            .group_by(dead_letters.c.origin, dead_letters.c.field, dead_letters.c.reason)
            .order_by(desc("n"))
            .limit(limit)
        )
        return self._all(query)

    def recent_actions(self, limit: int) -> Sequence[Row[Any]]:
        return self._all(select(actions).order_by(desc(actions.c.at)).limit(limit))
