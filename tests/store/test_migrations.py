"""Migrations are the schema: the models and the revisions agree (a model
changed without a migration fails here), upgrades are repeatable, downgrades
work, older databases are adopted, and ``lmstack-controller migrate`` runs them.
Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, select, text

from controller.store import Database, User
from controller.store.migrate import BASELINE, alembic_config, head_revision, schema_drift

NEW_MIGRATION = "run `make migration MSG='what changed'`, review the revision, commit it"


@pytest.fixture
async def db(tmp_path: Path, database_url: str) -> AsyncIterator[Database]:
    """An empty database (no tables) on each backend."""
    database = Database(database_url or f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    yield database
    await database.close()


def tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_models_and_migrations_define_the_same_schema(db: Database) -> None:
    await db.create_schema()
    async with db.engine.connect() as conn:
        drift = await conn.run_sync(schema_drift)
    assert drift == [], f"the models differ from the migrations: {NEW_MIGRATION}\n{drift}"


async def test_upgrade_reaches_head_and_is_repeatable(db: Database) -> None:
    assert await db.revision() is None
    await db.create_schema()
    assert await db.revision() == head_revision()
    async with db.session() as session:
        session.add(User(username="kept", password_hash="x"))
        await session.commit()
    await db.create_schema()
    assert await db.revision() == head_revision()
    async with db.session() as session:
        assert await session.scalar(select(User.username)) == "kept"


async def test_downgrade_to_nothing_and_back(db: Database) -> None:
    await db.create_schema()
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "base"))
    async with db.engine.connect() as conn:
        assert await conn.run_sync(tables) <= {"alembic_version"}
    await db.create_schema()
    async with db.engine.connect() as conn:
        assert await conn.run_sync(schema_drift) == []


async def test_a_database_from_before_migrations_is_adopted(db: Database) -> None:
    # The baseline schema with no alembic_version: what create_all used to make.
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), BASELINE))
        await conn.execute(text("DROP TABLE alembic_version"))
    async with db.engine.begin() as conn:
        # Only the baseline's columns: the models have grown since.
        await conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, is_admin, created_at, updated_at)"
                " VALUES ('u1', 'old', 'x', false, '2025-01-01', '2025-01-01')"
            )
        )
    assert await db.revision() is None
    await db.create_schema()
    assert await db.revision() == head_revision()
    async with db.session() as session:
        assert await session.scalar(select(User.username)) == "old"


async def test_migrate_command_upgrades_and_exits(tmp_path: Path, db: Database) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.main", "--data-dir", str(tmp_path / "data"),
        "migrate", "--database-url", db.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert f"upgraded from nothing to {head_revision()}" in out.decode()
    assert await db.revision() == head_revision()
