"""Usage-journal checkpoints: the newest journal segment each controller has added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_checkpoints",
        sa.Column("controller_id", sa.String(length=36), nullable=False),
        sa.Column("segment", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("controller_id"),
    )


def downgrade() -> None:
    op.drop_table("usage_checkpoints")
