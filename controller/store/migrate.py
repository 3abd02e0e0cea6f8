"""Schema migrations with Alembic, configured in code (no ``alembic.ini``), so they
run the same from a checkout and from an installed wheel.

Guarantees:
* The schema is created and changed only by the revisions in
  ``controller/store/migrations/versions``; ``upgrade`` brings a database to the
  newest one (head) and changes nothing on a database that is there already.
* A database made before migrations existed (by ``metadata.create_all``: the
  tables, no ``alembic_version``) is stamped with the baseline revision, whose
  schema it has, and then upgraded.
* On PostgreSQL the whole upgrade is one transaction holding an advisory lock,
  so controllers that start together against one database migrate one after
  the other, and a failed migration leaves the schema as it was.

``python -m controller.store.migrate revision MESSAGE`` (``make migration``)
writes a new revision: the models compared with a scratch SQLite database
upgraded to head.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from controller.store.models import Base
from controller.store.timeutil import UTCDateTime

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The revision whose schema ``metadata.create_all`` made before migrations existed.
BASELINE = "0001"
# Any constant shared by every LMStack controller: the key of the migration lock.
_PG_LOCK_KEY = 0x4C4D5354

log = logging.getLogger("lmstack.store")
# Alembic narrates every start ("Context impl …"); the steps applied are logged
# by env.py under lmstack.store instead.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Revisions name plain SQL types: ``UTCDateTime`` is stored as ``DateTime``."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime()"
    return False


# How autogenerate and the drift check compare the models with a database.
COMPARE_OPTIONS: dict[str, Any] = {"compare_type": True, "render_item": render_item}


def schema_drift(connection: Connection) -> list[Any]:
    """What the models have that the database lacks, or the other way round
    (Alembic's diff tuples); empty when a migrated database matches the models."""
    context = MigrationContext.configure(connection, opts=COMPARE_OPTIONS)
    return list(compare_metadata(context, Base.metadata))


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration; ``env.py`` runs on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migration revisions"
    return head


def next_revision_id() -> str:
    """Revisions are numbered ``0001``, ``0002``, … so their order reads at a glance."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return f"{int(head or 0) + 1:04d}"


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Bring the database on ``connection`` to head (run inside a transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and "users" in tables:
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


async def _write_revision(message: str, database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
            await conn.run_sync(
                lambda sync: command.revision(
                    alembic_config(sync),
                    message=message,
                    autogenerate=True,
                    rev_id=next_revision_id(),
                )
            )
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m controller.store.migrate")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="write a revision for the models' changes")
    revision.add_argument("message")
    revision.add_argument("--database-url", help="compare against this database at head")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(scratch) / 'head.db'}"
        asyncio.run(_write_revision(args.message, url))


if __name__ == "__main__":
    main()
