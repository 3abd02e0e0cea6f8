"""API key ``last_used`` times, buffered in memory and written in batches.

Guarantees:
* ``record`` only writes a dict entry, so traffic never turns into one database
  write per request; ``flush`` (every ``last_used_flush_seconds`` and at
  shutdown, see ``controller.store.flushing``) writes the buffer in one
  transaction.
* A batch whose write fails, or is cancelled, is merged back into the buffer and
  retried by the next flush; where a key was used again meanwhile, the newest
  time wins. Nothing recorded is lost while the controller runs.

Concurrency: everything runs on the controller's event loop; the buffer is a
plain dict touched only from that loop. A ``record`` that lands while a flush
is writing goes into the fresh buffer and is written by the next flush.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import update

from controller.store import ApiKey, Database

log = logging.getLogger("lmstack.auth")


class LastUsed:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        # Epoch seconds (cheaper than a datetime per request), converted when written.
        self._pending: dict[str, float] = {}

    def record(self, key_id: str) -> None:
        self._pending[key_id] = self._clock()

    def pending(self, key_id: str) -> datetime | None:
        when = self._pending.get(key_id)
        return None if when is None else datetime.fromtimestamp(when, UTC)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch)
        except BaseException:
            self._merge_back(batch)
            raise
        log.debug("wrote last_used for %d API keys", len(batch))

    async def _write(self, batch: dict[str, float]) -> None:
        async with self._db.session() as session:
            for key_id, when in batch.items():
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used=datetime.fromtimestamp(when, UTC))
                )
            await session.commit()

    def _merge_back(self, batch: dict[str, float]) -> None:
        for key_id, when in batch.items():
            newer = self._pending.get(key_id)
            if newer is None or newer < when:
                self._pending[key_id] = when
