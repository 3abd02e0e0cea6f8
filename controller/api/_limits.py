"""Limits and token budgets of users and API keys, as the REST handlers show them.

A budget's ``used`` is the prompt + completion tokens of its current UTC period
(``controller.limits.periods``) in the ``usage`` table: a key's budget counts that
key's calls, a user's every call of theirs (all their keys and login tokens).
Callers flush the gateway's usage recorder first (``current_usage``), so the
counts include every request that has finished.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from controller.gateway import GATEWAY
from controller.limits.periods import period_bounds
from controller.schemas import Budget, Limits
from controller.store import ApiKey, Usage, User

LIMIT_FIELDS = tuple(Limits.model_fields)


def limits_of(row: User | ApiKey) -> Limits:
    """The row's stored limits (already validated when they were set)."""
    return Limits.model_construct(**{field: getattr(row, field) for field in LIMIT_FIELDS})


def set_limits(row: User | ApiKey, limits: Limits | None) -> None:
    """Replace all of the row's limits; ``None`` clears them."""
    given = limits or Limits()
    for field in LIMIT_FIELDS:
        setattr(row, field, getattr(given, field))


async def current_usage(request: web.Request) -> None:
    """Add the gateway's buffered usage to the database, so budgets are current."""
    await request.app[GATEWAY].usage.flush()


def budget(token_budget: int, period: str, used: int, now: datetime) -> Budget:
    _, end = period_bounds(period, now)
    remaining = max(0, token_budget - used)
    return Budget(period=period, used=used, remaining=remaining, resets_at=end)


async def key_budgets(
    session: AsyncSession, keys: Sequence[ApiKey], now: datetime
) -> dict[str, Budget]:
    """Each key's budget, by key id, for the keys that have one."""
    return await _budgets(session, Usage.api_key_id, keys, now)


async def user_budgets(
    session: AsyncSession, users: Sequence[User], now: datetime
) -> dict[str, Budget]:
    """Each user's budget, by user id, for the users that have one."""
    return await _budgets(session, Usage.user_id, users, now)


async def _budgets(
    session: AsyncSession,
    column: InstrumentedAttribute[str],
    rows: Iterable[User | ApiKey],
    now: datetime,
) -> dict[str, Budget]:
    by_period: dict[str, list[User | ApiKey]] = defaultdict(list)
    for row in rows:
        if row.token_budget is not None and row.budget_period is not None:
            by_period[row.budget_period].append(row)
    budgets: dict[str, Budget] = {}
    for period, group in by_period.items():
        used = await _used(session, column, [row.id for row in group], period, now)
        for row in group:
            assert row.token_budget is not None
            budgets[row.id] = budget(row.token_budget, period, used.get(row.id, 0), now)
    return budgets


async def _used(
    session: AsyncSession,
    column: InstrumentedAttribute[str],
    ids: list[str],
    period: str,
    now: datetime,
) -> dict[str, int]:
    """Tokens per id (of ``column``) in the period holding ``now``."""
    start, end = period_bounds(period, now)
    tokens = func.sum(Usage.prompt_tokens + Usage.completion_tokens)
    stmt = (
        select(column, tokens)
        .where(column.in_(ids))
        .where(Usage.day >= start.date().isoformat(), Usage.day < end.date().isoformat())
        .group_by(column)
    )
    return {owner: int(total or 0) for owner, total in await session.execute(stmt)}
