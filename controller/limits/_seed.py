"""Tokens a user or key used in a budget period, read from the ``usage`` table.

The gateway's usage is journaled first and added to the table by flushes, so
``UsageTable`` flushes (``flush``, the usage recorder's) before it sums: the sum
then holds every request recorded until the flush began. Days are ISO strings
(``YYYY-MM-DD``), compared as strings.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from controller.store import Database, Usage
from shared.errors import ServiceUnavailable, StoreError

log = logging.getLogger("lmstack.limits")


class UsageTable:
    def __init__(self, db: Database, flush: Callable[[], Awaitable[None]]) -> None:
        self._db = db
        self._flush = flush

    async def __call__(self, kind: str, subject_id: str, start: datetime, end: datetime) -> int:
        """Prompt + completion tokens of ``kind`` ("key" or "user") from ``start``
        to ``end`` (exclusive; whole UTC days)."""
        column = Usage.api_key_id if kind == "key" else Usage.user_id
        last_day = (end - timedelta(days=1)).date().isoformat()
        query = select(func.coalesce(func.sum(Usage.prompt_tokens + Usage.completion_tokens), 0))
        query = query.where(column == subject_id, Usage.day >= start.date().isoformat())
        try:
            await self._flush()
            async with self._db.session() as session:
                used = await session.scalar(query.where(Usage.day <= last_day))
        except (StoreError, SQLAlchemyError, OSError) as exc:
            log.warning("cannot read the token budget used by %s %s: %s", kind, subject_id, exc)
            raise ServiceUnavailable("The token budget cannot be read now; retry later") from exc
        return int(used or 0)
