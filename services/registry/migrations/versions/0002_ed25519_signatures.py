"""Room for Ed25519 signatures (`ed25519:` and 86 base64url characters) in `versions.signature`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a column in place (Alembic copies the table)
    with op.batch_alter_table("versions") as batch:
        batch.alter_column("signature", type_=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.alter_column("signature", type_=sa.String(80), existing_nullable=False)
