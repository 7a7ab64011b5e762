"""Drift alarms as evidence: a monitor's `drift.detected` about a version in an environment is a
row of `evidence` with `alarms = 1` (and no labelled predictions), which holds that version back
from the next environment's `after` rule.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence") as batch:
        batch.add_column(sa.Column("alarms", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("evidence") as batch:
        batch.drop_column("alarms")
