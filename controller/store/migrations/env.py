"""Alembic's environment: runs on the connection ``controller.store.migrate`` hands
over in ``config.attributes`` (there is no ``alembic.ini`` and no URL here)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection

from controller.store.migrate import COMPARE_OPTIONS
from controller.store.models import Base

log = logging.getLogger("lmstack.store")


def log_step(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    log.info(
        "database schema: %s -> %s",
        ",".join(step.source_revision_ids) or "nothing",
        ",".join(step.destination_revision_ids) or "nothing",
    )


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # ALTERs SQLite cannot do become table copies; plain ALTERs elsewhere.
        render_as_batch=True,
        on_version_apply=log_step,
        **COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError("run migrations with controller.store.migrate (lmstack-controller migrate)")
run(connection)
