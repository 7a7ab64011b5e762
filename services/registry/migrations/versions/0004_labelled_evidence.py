"""Labelled predictions per environment and version, as the monitors measured them (`evidence`,
one row per `quality.measured` event, so a message read twice counts once): what an
environment's `after` rule with `after_labelled` waits for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
        sa.Column("correct", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_evidence_version", "evidence", ["model_name", "environment", "version"])


def downgrade() -> None:
    op.drop_table("evidence")
