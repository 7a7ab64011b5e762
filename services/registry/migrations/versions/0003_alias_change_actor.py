"""Who moved an alias (`alias_history.actor`: the role of the token, or `registry` for an
environment's `after` rule), for the lineage of a version's path through the environments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alias_history", sa.Column("actor", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alias_history") as batch:
        batch.drop_column("actor")
