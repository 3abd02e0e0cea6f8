"""Token accounting per API key, user, deployment and UTC day, that no crash of
the controller process loses.

Guarantees:

* Every completed request's usage is appended to the usage journal
  (``controller.gateway.journal``) by ``record``: one ``os.write`` of one line,
  no database write on the request's path. It survives the process being
  killed (SIGKILL included) from the moment ``record`` returns.
* Exactly once into the database: ``flush`` (every ``usage_flush_seconds``,
  before ``GET /api/usage`` answers, at shutdown) starts a new segment, then
  adds the closed segments' counts AND moves this controller's checkpoint
  (``usage_checkpoints``: the newest segment added) up to them in ONE
  transaction. ``replay`` does the same at start, before the gateway serves.
  A crash before the commit leaves the segments to the next start. An added
  segment is never read for counting again (the recorder remembers it, and
  after a restart it is at or below the checkpoint, read inside the
  transaction), so a retried flush or a restart never adds a segment twice.
* Rate windows survive a restart: an added segment stays on disk until its
  newest record is ``retain`` seconds old (``RECENT_SECONDS``, 60), then a
  flush deletes it; ``recent(since)`` reads the requests of that last minute
  back at start.
* A machine crash (power loss, kernel panic) may lose what was recorded since
  the last flush: the open segment lives in the page cache until it is closed
  and fsynced (and, on SQLite, the last commits its WAL had not synced yet:
  ``synchronous=NORMAL``).
* A record the journal cannot take (disk full) is kept in memory and added at
  the next flush; such records, and only they, are lost to a SIGKILL (logged).
* Additions are upserts (``counter = counter + delta``), so controllers sharing
  a PostgreSQL database add up instead of overwriting; each has its own journal
  id and checkpoint row.

Concurrency: ``record`` is synchronous and runs on the event loop; flushes run
one at a time (a lock) and to their end even when their caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.gateway.journal import (
    RECENT_SECONDS,
    Counts,
    RecentEvent,
    Segment,
    UsageJournal,
    UsageKey,
    encode,
    merge,
)
from controller.store import Database, Usage, UsageCheckpoint, flushing, uncancelled
from controller.store.models import new_id
from controller.store.timeutil import utcnow
from shared.errors import StoreError

__all__ = ["Counts", "RecentEvent", "UsageKey", "UsageRecorder", "recording_usage", "today"]

log = logging.getLogger("lmstack.gateway.usage")

# Segment number → the counts in it.
Segments = dict[int, Segment]


def today() -> str:
    """The UTC date, ``YYYY-MM-DD`` (asked per request: the string is made once a day)."""
    return _iso_day(int(time.time() // 86400))


@functools.lru_cache(maxsize=4)
def _iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        journal: UsageJournal,
        *,
        retain: float = RECENT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._journal = journal
        self._retain = retain
        self._clock = clock
        # Added segments kept on disk for ``recent``: number → its newest record's time.
        self._kept: dict[int, float] = {}
        self._dialect: Any = postgresql if db.url.startswith("postgresql") else sqlite
        # Records the journal refused (disk full), added at the next flush.
        self._unjournaled: dict[UsageKey, Counts] = {}
        self._lock = asyncio.Lock()

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
        now = self._clock()
        day = _iso_day(int(now // 86400))
        key = (api_key_id or "", user_id, deployment_id, deployment_name, day)
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        if not self._journal.append(encode(key, prompt, completion, now)):
            counts = self._unjournaled.setdefault(key, Counts())
            counts.add(Counts(1, prompt, completion))

    async def replay(self) -> None:
        """At start: open a segment above the checkpoint and every file, then add
        what earlier runs left in the journal."""
        async with self._db.session() as session:
            checkpoint = await self._checkpoint(session)
        self._journal.open(after=checkpoint)
        left = [segment for segment in self._journal.closed() if segment > checkpoint]
        if left:
            log.info("replaying %d usage journal segment(s) left by an earlier run", len(left))
        await self.flush()

    async def flush(self) -> None:
        """Add every closed segment (the open one closed first) to the database."""
        await uncancelled(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            self._rotate()
            await asyncio.to_thread(self._journal.seal)
            segments = [s for s in self._journal.closed() if s not in self._kept]
            if segments or self._unjournaled:
                parsed = await asyncio.to_thread(self._read, segments)
                pending, self._unjournaled = self._unjournaled, {}
                try:
                    await self._apply(parsed, pending)
                except BaseException:
                    merge(self._unjournaled, pending)
                    raise
                self._kept.update({number: seg.newest for number, seg in parsed.items()})
            await self._expire()

    def recent(self, since: float) -> list[RecentEvent]:
        """The requests completed at or after unix time ``since`` that the
        journal holds (at most ``retain`` seconds back, for ``Limiter.restore``).
        Blocking; call it at start, before the gateway serves: later it would
        also return what this run already counted."""
        return self._journal.recent(since)

    async def _expire(self) -> None:
        """Delete the added segments whose newest record is ``retain`` seconds old."""
        cutoff = self._clock() - self._retain
        old = sorted(number for number, newest in self._kept.items() if newest <= cutoff)
        if old:
            await asyncio.to_thread(self._journal.remove, old)
            for number in old:
                del self._kept[number]

    def _rotate(self) -> None:
        try:
            self._journal.rotate()
        except StoreError:
            # The open segment keeps taking records; the closed ones are added.
            log.exception("cannot start a new usage journal segment")

    def _read(self, segments: list[int]) -> Segments:
        return {segment: self._journal.read(segment) for segment in segments}

    async def _apply(self, parsed: Segments, pending: dict[UsageKey, Counts]) -> None:
        """The fresh segments' counts and the checkpoint, in one transaction."""
        async with self._db.session() as session:
            checkpoint = await self._checkpoint(session, lock=True)
            fresh = [segment for segment in parsed if segment > checkpoint]
            batch: dict[UsageKey, Counts] = {}
            merge(batch, pending)
            for segment in fresh:
                merge(batch, parsed[segment].counts)
            if not fresh and not batch:
                return
            for key, counts in batch.items():
                await session.execute(self._add(key, counts))
            if fresh:
                await session.execute(self._advance(max(fresh)))
            await session.commit()

    async def _checkpoint(self, session: AsyncSession, *, lock: bool = False) -> int:
        stmt = select(UsageCheckpoint.segment).where(
            UsageCheckpoint.controller_id == self._journal.controller_id
        )
        segment = await session.scalar(stmt.with_for_update() if lock else stmt)
        return segment or 0

    def _add(self, key: UsageKey, counts: Counts) -> Any:
        table = Usage.__table__
        stmt = self._dialect.insert(table).values(
            id=new_id(), api_key_id=key[0], user_id=key[1], deployment_id=key[2],
            deployment_name=key[3], day=key[4], requests=counts.requests,
            prompt_tokens=counts.prompt_tokens, completion_tokens=counts.completion_tokens,
        )  # fmt: skip
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

    def _advance(self, segment: int) -> Any:
        stmt = self._dialect.insert(UsageCheckpoint.__table__).values(
            controller_id=self._journal.controller_id, segment=segment, updated_at=utcnow()
        )
        return stmt.on_conflict_do_update(
            index_elements=["controller_id"],
            set_={"segment": stmt.excluded.segment, "updated_at": stmt.excluded.updated_at},
        )


@contextlib.asynccontextmanager
async def recording_usage(
    db: Database, flush_seconds: float, journal_dir: Path
) -> AsyncIterator[UsageRecorder]:
    """A recorder journaling into ``journal_dir``: what earlier runs left there
    is added first, then it is flushed every ``flush_seconds`` while the block
    runs, and once more when it ends (after the gateway stopped: the last
    requests count)."""
    journal = UsageJournal(journal_dir)
    try:
        usage = UsageRecorder(db, journal)
        await usage.replay()
        async with flushing(usage.flush, flush_seconds, "gateway usage"):
            yield usage
    finally:
        journal.close()
