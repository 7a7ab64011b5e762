"""Brings the registry's database to the newest schema (Alembic `upgrade head`) at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration's revision id: what a migrated database's `alembic_version` holds."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


MIGRATION_LOCK = 0x6374_6C6F_6F70  # "ctloop"
"""PostgreSQL advisory lock key held while migrating."""


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade to `revision`. Registry replicas starting together on one PostgreSQL database
    take turns (an advisory lock held until the upgrade commits). NOTE: without it, four
    registries migrating one new database at once failed to start (a table created twice) or
    deadlocked for over 60 s; with it all four were migrated within a second
    (tests/integration/test_registry_store.py)."""
    config = _config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
