"""Replicas: a deployment becomes ``replicas`` instances; workers get labels.

Each existing deployment placed on a worker becomes one instance whose id is the
deployment's own: the agent reports a container made before instances (no
``lmstack.instance_id`` label) as that instance, so it is adopted without a
restart. A deployment on no worker gets no instance; the controller places one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch_op:
        batch_op.add_column(sa.Column("replicas", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(
            sa.Column("stopped", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("spec_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("rollout_error", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("pinned_worker_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("offline_since", sa.DateTime(), nullable=True))
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("deployment_id", sa.String(length=36), nullable=False),
        sa.Column("worker_id", sa.String(length=36), nullable=True),
        sa.Column("gpu_indices", sa.JSON(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("container_id", sa.String(length=80), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("last_exit_code", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["workers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_instances_deployment_id", "instances", ["deployment_id"])
    op.create_index("ix_instances_worker_id", "instances", ["worker_id"])
    op.execute(
        """
        INSERT INTO instances (id, deployment_id, worker_id, gpu_indices, port, container_id,
            status, status_message, final, restarts, spec_version, model, config, draining,
            created_at, updated_at)
        SELECT id, id, worker_id, gpu_indices, port, container_id, status, status_message,
            false, 0, 1, model, config, false, created_at, updated_at
        FROM deployments WHERE worker_id IS NOT NULL
        """
    )


def downgrade() -> None:
    op.drop_index("ix_instances_worker_id", table_name="instances")
    op.drop_index("ix_instances_deployment_id", table_name="instances")
    op.drop_table("instances")
    with op.batch_alter_table("workers") as batch_op:
        batch_op.drop_column("offline_since")
        batch_op.drop_column("labels")
    with op.batch_alter_table("deployments") as batch_op:
        batch_op.drop_column("pinned_worker_id")
        batch_op.drop_column("rollout_error")
        batch_op.drop_column("spec_version")
        batch_op.drop_column("stopped")
        batch_op.drop_column("replicas")
