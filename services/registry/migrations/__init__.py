"""Alembic migrations of the registry's metadata database (applied at start-up)."""
