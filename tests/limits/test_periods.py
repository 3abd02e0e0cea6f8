"""Budget periods are UTC days and months, whatever zone the clock is read in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.limits.periods import period_bounds


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_day_runs_from_utc_midnight_to_the_next() -> None:
    assert period_bounds("day", utc(2026, 3, 9, 23, 59, 59)) == (utc(2026, 3, 9), utc(2026, 3, 10))


def test_a_month_runs_from_its_first_day_to_the_next_month() -> None:
    assert period_bounds("month", utc(2026, 2, 28, 12)) == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert period_bounds("month", utc(2026, 12, 31, 23)) == (utc(2026, 12, 1), utc(2027, 1, 1))


def test_the_period_is_utc_even_for_a_clock_in_another_zone() -> None:
    # 01:00 on 1 March in UTC+2 is still 28 February in UTC.
    local = datetime(2026, 3, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert period_bounds("day", local) == (utc(2026, 2, 28), utc(2026, 3, 1))
    assert period_bounds("month", local) == (utc(2026, 2, 1), utc(2026, 3, 1))


def test_a_start_is_inside_its_own_period() -> None:
    assert period_bounds("month", utc(2026, 5, 1)) == (utc(2026, 5, 1), utc(2026, 6, 1))


@pytest.mark.parametrize("period", ["week", "", "Month"])
def test_an_unknown_period_is_refused(period: str) -> None:
    with pytest.raises(ValueError, match="unknown budget period"):
        period_bounds(period, utc(2026, 1, 1))


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_bounds("day", datetime(2026, 1, 1))
