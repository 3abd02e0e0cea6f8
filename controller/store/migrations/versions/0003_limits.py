"""Limits on users and API keys: rpm, tpm, max_parallel, token_budget per budget_period.

NULL is unlimited, so existing users and keys keep no limits.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("users", "api_keys")


def limit_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.BigInteger(), nullable=True),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("token_budget", sa.BigInteger(), nullable=True),
        sa.Column("budget_period", sa.String(length=8), nullable=True),
    ]


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            for column in limit_columns():
                batch_op.add_column(column)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            for column in reversed(limit_columns()):
                batch_op.drop_column(column.name)
