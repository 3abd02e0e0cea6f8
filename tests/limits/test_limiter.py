"""The Limiter on an injected clock: exact windows, parallel slots, budgets and
their seeding, the stricter subject, headers and restore."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from controller.limits import Admission, Limiter, LimitSet
from controller.limits._headers import duration
from shared.errors import RateLimited
from tests.clock import ManualClock

# 2026-03-09 12:00:00 UTC: the day ends in 12 h, the month on 2026-04-01.
NOON = datetime(2026, 3, 9, 12, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Caller:
    user_id: str = "u1"
    api_key_id: str | None = "k1"
    key_limits: LimitSet | None = None
    user_limits: LimitSet | None = None


@dataclass
class Table:
    """A stand-in for the usage table: tokens used per subject, loads counted."""

    used: dict[tuple[str, str], int] = field(default_factory=dict)
    loads: list[tuple[str, str, datetime, datetime]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, kind: str, id: str, start: datetime, end: datetime) -> int:
        self.loads.append((kind, id, start, end))
        if self.gate is not None:
            await self.gate.wait()
        return self.used.get((kind, id), 0)


def limiter(table: Table | None = None, now: float = NOON) -> tuple[Limiter, ManualClock, Table]:
    clock = ManualClock(now)
    table = table or Table()
    return Limiter(table, clock=clock), clock, table


async def refused(limiter: Limiter, caller: Caller) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await limiter.admit(caller)
    return info.value


async def test_rpm_window_is_exact_and_retry_after_points_at_the_freed_slot() -> None:
    lim, clock, _ = limiter()
    caller = Caller(key_limits=LimitSet(rpm=2))
    first = await lim.admit(caller)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    clock.advance(10)
    await lim.admit(caller)
    clock.advance(5)
    refusal = await refused(lim, caller)
    assert (refusal.status_code, refusal.type, refusal.code) == (429, "rate_limit_exceeded", "rpm")
    assert refusal.retry_after == pytest.approx(45)
    assert refusal.headers["retry-after"] == "45"
    assert refusal.headers["retry-after-ms"] == "45000"
    assert refusal.headers["x-ratelimit-limit-requests"] == "2"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"
    assert refusal.headers["x-ratelimit-reset-requests"] == "55s"
    assert "x-should-retry" not in refusal.headers
    clock.advance(45 - 0.001)
    await refused(lim, caller)  # a millisecond early: still full
    clock.advance(0.001)
    admitted = await lim.admit(caller)  # the first request left at exactly +60 s
    assert admitted.headers["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_counts_completed_tokens_and_admits_below_the_limit() -> None:
    lim, clock, _ = limiter()
    caller = Caller(key_limits=LimitSet(tpm=100))
    a = await lim.admit(caller)
    b = await lim.admit(caller)  # in flight together: both admitted (the overshoot)
    lim.release(a, 30, 40)
    assert (await lim.admit(caller)).headers["x-ratelimit-remaining-tokens"] == "30"
    clock.advance(20)
    lim.release(b, 10, 30)  # the window holds 110 tokens now
    refusal = await refused(lim, caller)
    assert refusal.code == "tpm"
    # Dropping a's 70 tokens brings it to 40 < 100: a leaves at +60 s from its release.
    assert refusal.retry_after == pytest.approx(40)
    assert refusal.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refusal.headers["x-ratelimit-reset-tokens"] == "1m0s"
    clock.advance(40)
    await lim.admit(caller)


async def test_max_parallel_counts_in_flight_and_release_is_idempotent() -> None:
    lim, _, _ = limiter()
    caller = Caller(key_limits=LimitSet(max_parallel=1))
    held = await lim.admit(caller)
    assert held.headers["x-ratelimit-limit-requests"] == "1"
    assert held.headers["x-ratelimit-remaining-requests"] == "0"
    refusal = await refused(lim, caller)
    assert (refusal.code, refusal.retry_after, refusal.headers["retry-after"]) == (
        "max_parallel", 1.0, "1"
    )  # fmt: skip
    lim.release(held, 0, 0)
    lim.release(held, 0, 0)  # a second release gives nothing back twice
    again = await lim.admit(caller)
    await refused(lim, caller)
    lim.release(again, 0, 0)


async def test_budget_is_seeded_once_per_period_then_counted_live() -> None:
    table = Table(used={("key", "k1"): 90})
    lim, clock, _ = limiter(table)
    caller = Caller(key_limits=LimitSet(token_budget=100, budget_period="day"))
    admission = await lim.admit(caller)
    assert admission.headers["x-ratelimit-remaining-tokens"] == "10"
    assert admission.headers["x-ratelimit-reset-tokens"] == "12h0m0s"
    lim.release(admission, 5, 20)  # overshoots by its own tokens: 115 of 100
    refusal = await refused(lim, caller)
    assert (refusal.type, refusal.code) == ("insufficient_quota", "token_budget")
    assert refusal.retry_after == pytest.approx(12 * 3600)
    assert refusal.headers["x-should-retry"] == "false"
    assert refusal.headers["retry-after"] == str(12 * 3600)
    [(kind, id, start, end)] = table.loads
    assert (kind, id) == ("key", "k1")
    assert (start, end) == (datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
    # The next day is loaded afresh (the table says what that day used).
    table.used[("key", "k1")] = 0
    clock.advance(12 * 3600)
    await lim.admit(caller)
    assert len(table.loads) == 2 and table.loads[1][2] == datetime(2026, 3, 10, tzinfo=UTC)


async def test_concurrent_first_requests_share_one_budget_load() -> None:
    table = Table(used={("user", "u1"): 3}, gate=asyncio.Event())
    lim, _, _ = limiter(table)
    caller = Caller(api_key_id=None, user_limits=LimitSet(token_budget=10, budget_period="month"))
    calls = [asyncio.create_task(lim.admit(caller)) for _ in range(5)]
    await asyncio.sleep(0)
    table.gate.set()  # type: ignore[union-attr]
    admissions = await asyncio.gather(*calls)
    assert len(table.loads) == 1
    assert table.loads[0][3] == datetime(2026, 4, 1, tzinfo=UTC)
    lim.release(admissions[0], 4, 3)
    refusal = await refused(lim, caller)
    assert refusal.code == "token_budget"  # 3 + 7 = 10: exhausted


async def test_the_stricter_subject_wins_and_refusals_name_the_longest_wait() -> None:
    lim, clock, _ = limiter()
    caller = Caller(key_limits=LimitSet(rpm=10), user_limits=LimitSet(rpm=2, tpm=1000))
    first = await lim.admit(caller)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    await lim.admit(caller)
    refusal = await refused(lim, caller)
    assert refusal.code == "rpm" and "user u1" in refusal.detail
    # Another key of the same user is held by the user's limit too.
    other = Caller(api_key_id="k2", key_limits=None, user_limits=LimitSet(rpm=2))
    await refused(lim, other)
    # The key's window saw only admitted requests: refusals took nothing.
    clock.advance(60)
    assert (await lim.admit(caller)).headers["x-ratelimit-remaining-requests"] == "1"


async def test_login_tokens_have_only_the_user_and_unlimited_callers_get_nothing() -> None:
    lim, _, _ = limiter()
    login = Caller(api_key_id=None, key_limits=LimitSet(rpm=1), user_limits=LimitSet(rpm=1))
    await lim.admit(login)
    await refused(lim, login)
    free = await lim.admit(Caller(user_id="u2"))
    assert isinstance(free, Admission) and free.headers == {}
    assert lim.headers(Caller(user_id="u2")) == {}


async def test_headers_without_admission_show_the_window() -> None:
    lim, clock, _ = limiter()
    caller = Caller(key_limits=LimitSet(rpm=5))
    await lim.admit(caller)
    clock.advance(0.98)
    assert lim.headers(caller) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "59.02s",
    }


async def test_restore_rebuilds_the_last_minute_in_time_order() -> None:
    lim, clock, _ = limiter()
    now = clock()
    lim.restore(
        [
            (now - 10, "k1", "u1", 50),
            (now - 70, "k1", "u1", 1000),  # older than the window: ignored
            (now - 30, "", "u1", 20),  # a login token's request: the user only
            (now - 20, "k1", "u1", 40),
        ]
    )
    caller = Caller(key_limits=LimitSet(rpm=3, tpm=95), user_limits=LimitSet(rpm=3))
    # The key holds 2 requests and 90 tokens; the user 3 requests: full.
    refusal = await refused(lim, caller)
    assert refusal.code == "rpm" and "user u1" in refusal.detail
    assert refusal.retry_after == pytest.approx(30)  # its oldest (now - 30) leaves
    clock.advance(30)
    admitted = await lim.admit(caller)
    assert admitted.headers["x-ratelimit-remaining-tokens"] == "5"
    assert admitted.headers["x-ratelimit-remaining-requests"] == "0"
    lim.restore([])  # nothing to restore changes nothing
    assert lim.headers(caller)["x-ratelimit-remaining-tokens"] == "5"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1, "1s"), (1.5, "1.5s"), (8.64, "8.64s"),
     (360, "6m0s"), (61.25, "1m1.25s"), (7200, "2h0m0s"), (12 * 3600 + 1, "12h0m1s")],
)  # fmt: skip
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_limit_set_of_a_row_without_limits_is_none() -> None:
    @dataclass
    class Row:
        rpm: int | None = None
        tpm: int | None = None
        max_parallel: int | None = None
        token_budget: int | None = None
        budget_period: str | None = None

    assert LimitSet.of(Row()) is None
    assert LimitSet.of(Row(rpm=3)) == LimitSet(rpm=3)
    assert LimitSet.of(Row(token_budget=5)) == LimitSet(token_budget=5, budget_period="month")
