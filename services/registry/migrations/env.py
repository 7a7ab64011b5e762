"""Alembic environment: migrations run on the connection `services.registry.migrate` passes."""

from __future__ import annotations

from alembic import context

from services.registry.store import metadata_obj

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata_obj)
with context.begin_transaction():
    context.run_migrations()
