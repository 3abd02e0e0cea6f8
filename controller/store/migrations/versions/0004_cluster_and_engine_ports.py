"""The cluster id (one row) and each worker's declared engine port range.

``cluster`` stays empty here: the controller makes its one row on the next start
(``controller.bootstrap.ensure_cluster``). Existing workers declared no range
(NULL), so the controller's range keeps applying to them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
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
        "cluster",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("singleton"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("engine_port_min", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("engine_port_max", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch_op:
        batch_op.drop_column("engine_port_max")
        batch_op.drop_column("engine_port_min")
    op.drop_table("cluster")
