"""Token accounting per API key, deployment and UTC day.

Guarantees: counts are buffered in memory and added to the store in one
transaction every ``usage_flush_seconds`` and at shutdown; a flush that fails
puts its batch back, so nothing is lost while the controller keeps running.
Additions are upserts (``counter = counter + delta``), so concurrent
controllers sharing a PostgreSQL database add up instead of overwriting.

Concurrency: ``record`` is synchronous and called on the event loop; ``flush``
swaps the buffer out before its first await.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from controller.store import Database, Usage, flushing
from controller.store.models import new_id

log = logging.getLogger("lmstack.gateway.usage")

# api_key_id ("" for login tokens), user_id, deployment_id, deployment_name, day
UsageKey = tuple[str, str, str, str, str]


@dataclass
class Counts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


def today() -> str:
    """The UTC date, ``YYYY-MM-DD`` (asked per request: the string is made once a day)."""
    return _iso_day(int(time.time() // 86400))


@functools.lru_cache(maxsize=4)
def _iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


class UsageRecorder:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[UsageKey, Counts] = {}

    def record(
        self,
        *,
        api_key_id: str | None,
        user_id: str,
        deployment_id: str,
        deployment_name: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        key = (api_key_id or "", user_id, deployment_id, deployment_name, today())
        counts = self._pending.setdefault(key, Counts())
        counts.add(Counts(1, max(0, prompt_tokens), max(0, completion_tokens)))

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch)
        except BaseException:
            for key, counts in batch.items():
                self._pending.setdefault(key, Counts()).add(counts)
            raise

    async def _write(self, batch: dict[UsageKey, Counts]) -> None:
        rows = [
            {
                "api_key_id": key[0],
                "user_id": key[1],
                "deployment_id": key[2],
                "deployment_name": key[3],
                "day": key[4],
                "requests": counts.requests,
                "prompt_tokens": counts.prompt_tokens,
                "completion_tokens": counts.completion_tokens,
            }
            for key, counts in batch.items()
        ]
        async with self._db.session() as session:
            for row in rows:
                await session.execute(self._upsert(row))
            await session.commit()

    def _upsert(self, row: dict[str, Any]) -> Any:
        dialect = postgresql if self._db.url.startswith("postgresql") else sqlite
        table = Usage.__table__
        stmt = dialect.insert(table).values(id=new_id(), **row)
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=["api_key_id", "user_id", "deployment_id", "day"],
            set_={
                "requests": table.c.requests + excluded.requests,
                "prompt_tokens": table.c.prompt_tokens + excluded.prompt_tokens,
                "completion_tokens": table.c.completion_tokens + excluded.completion_tokens,
                "deployment_name": excluded.deployment_name,
            },
        )


@contextlib.asynccontextmanager
async def recording_usage(db: Database, flush_seconds: float) -> AsyncIterator[UsageRecorder]:
    """A recorder flushed every ``flush_seconds`` while the block runs, and once
    more when it ends (after the gateway stopped: the last requests count)."""
    usage = UsageRecorder(db)
    async with flushing(usage.flush, flush_seconds, "gateway usage"):
        yield usage
