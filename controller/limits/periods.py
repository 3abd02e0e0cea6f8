"""Budget periods: a token budget counts the tokens of one UTC day or UTC month.

``period_bounds`` is the one definition of a period's start and end, used both
where budgets are enforced (the gateway) and where they are shown (the REST API).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias, get_args

BudgetPeriod: TypeAlias = Literal["day", "month"]
BUDGET_PERIODS: tuple[str, ...] = get_args(BudgetPeriod)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC period holding ``now``: its start (inclusive) and end (exclusive).

    ``now`` must be aware; a ``day`` starts at 00:00 UTC, a ``month`` at 00:00 UTC
    on its first day. Raises ``ValueError`` for any other period.
    """
    if now.tzinfo is None:
        raise ValueError("period_bounds needs an aware datetime")
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "month":
        start = day.replace(day=1)
        return start, _next_month(start)
    raise ValueError(f"unknown budget period {period!r} (expected one of {BUDGET_PERIODS})")


def _next_month(start: datetime) -> datetime:
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
