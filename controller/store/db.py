"""The database handle: one async engine and its session factory.

SQLite gets WAL journaling, foreign keys and a busy timeout so the API and the
background writers do not trip over each other; PostgreSQL (asyncpg) runs the
same code. The schema is made only by migrations (``controller.store.migrate``):
``create_schema`` upgrades the database to the newest revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from alembic.util.exc import CommandError
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from controller.store import migrate
from shared.errors import Conflict, StoreError

log = logging.getLogger("lmstack.store")
T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database URL: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_schema(self) -> None:
        """Upgrade the schema to the newest migration (a no-op when it is there)."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(migrate.upgrade)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the database: {exc}") from exc
        except CommandError as exc:
            raise StoreError(f"cannot migrate the database: {exc}") from exc

    async def revision(self) -> str | None:
        """The migration revision the database is at (None: not migrated)."""
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(migrate.current_revision)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the database: {exc}") from exc

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()


async def uncancelled(work: Awaitable[T]) -> T:
    """Run a database write to its end even if the caller is cancelled meanwhile.

    A cancellation that lands inside a transaction leaves its connection
    half-used, and the pool has to throw it away. Background writers (status
    reports, heartbeat and usage flushes, disconnect bookkeeping) are cancelled
    at shutdown and on disconnects, so they finish the write first and then let
    the cancellation through. The write is awaited, never left running.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            try:
                await task
            except Exception:
                # The caller is gone; the failure is not lost, it is logged.
                log.exception("a database write finished with an error after its caller left")
        raise


async def commit_or_conflict(session: AsyncSession, detail: str) -> None:
    """Commit; a unique or foreign-key violation becomes ``Conflict(detail)``
    (409), with the session rolled back."""
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(detail) from None


@asynccontextmanager
async def flushing(
    flush: Callable[[], Awaitable[None]], interval: float, what: str
) -> AsyncIterator[None]:
    """Call ``flush`` every ``interval`` seconds while the block runs, and once
    more when it ends, so buffered writes are neither lost nor left running.

    A failed flush is logged and tried again at the next interval (the flush
    keeps what it could not write). Each flush runs under ``uncancelled``.
    """

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await uncancelled(flush())
            except Exception:
                log.exception("writing %s failed; will retry", what)

    task = asyncio.create_task(every_interval())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await flush()
