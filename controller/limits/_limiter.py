"""``Limiter``: rpm, tpm, parallel requests and token budgets of users and API keys.

A request's subjects are its API key (when it uses one) and its user; every
limit of both applies, so the stricter wins. ``admit`` refuses with
``RateLimited`` or returns an ``Admission``; ``release`` (exactly once per
admission; later calls do nothing) ends it with the tokens the engine reported.

Guarantees:
* Exact sliding windows of ``window`` seconds (60) on one controller: a request
  is admitted while fewer than ``rpm`` requests were admitted in the last 60 s
  and the tokens of requests completed in the last 60 s are below ``tpm``; a
  window entry leaves at exactly its time + 60 s, which is when ``Retry-After``
  points.
* ``max_parallel``: admitted and not yet released requests. The gateway
  releases in a ``finally``, so errors and clients going away never leak one.
* Token budgets count the prompt + completion tokens engines report, per UTC
  day or month (``periods.period_bounds``). Each subject's budget is seeded once
  per period from the usage table (the journal flushed into it first), one load
  at a time per subject and period (``SingleFlight``), then kept live.
* Overshoot: tokens are known only when a request completes, so requests in
  flight together may pass ``tpm`` or ``token_budget`` by their own tokens (at
  most ``max_parallel`` requests' worth when that is set). A request completing
  while its subject's budget loads may be missed by it.
* Cost: an unlimited caller is never seen here (the gateway checks
  ``Identity.limited``); a limited one costs a few dict and deque operations.
  Memory: per limited subject, at most its last minute's entries; subjects are
  kept for the process's life (one per user and key that was limited).
* ``restore`` rebuilds the windows after a restart from requests completed in
  the last minute (their completion time stands for their admission time).

Windows run on the injected ``clock`` (unix seconds, ``time.time``), so a wall
clock stepping back holds entries longer, never shorter. Concurrency: event loop
only; ``admit`` awaits only while a budget loads, and checks and takes every
limit with no await in between.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from controller.limits._headers import Numbers, rate_headers, refusal_headers
from controller.limits._limitset import LimitSet
from controller.limits.periods import period_bounds
from controller.singleflight import SingleFlight
from shared.errors import RateLimited

WINDOW = 60.0
# When a parallel slot frees is unknown: a refused caller is told to retry in 1 s.
PARALLEL_RETRY = 1.0

# (subject kind "key" or "user", its id, period start, period end) → tokens used.
UsedTokens = Callable[[str, str, datetime, datetime], Awaitable[int]]
# (unix time, API key id or "", user id, tokens) of a completed request.
Event = tuple[float, str, str, int]


class Caller(Protocol):
    """Who is calling (``controller.auth.Identity``)."""

    @property
    def user_id(self) -> str: ...
    @property
    def api_key_id(self) -> str | None: ...
    @property
    def key_limits(self) -> LimitSet | None: ...
    @property
    def user_limits(self) -> LimitSet | None: ...


class _Subject:
    """One user's or key's windows, requests in flight and budget."""

    __slots__ = ("id", "in_flight", "kind", "period", "period_end", "requests", "tokens",
                 "used", "window_tokens")  # fmt: skip

    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        self.requests: deque[float] = deque()  # admission times
        self.tokens: deque[tuple[float, int]] = deque()  # (completion time, tokens)
        self.window_tokens = 0
        self.in_flight = 0
        self.period: str | None = None  # the period ``used`` counts, once seeded
        self.period_end = 0.0
        self.used = 0

    def trim(self, cutoff: float) -> None:
        requests, tokens = self.requests, self.tokens
        while requests and requests[0] <= cutoff:
            requests.popleft()
        while tokens and tokens[0][0] <= cutoff:
            self.window_tokens -= tokens.popleft()[1]

    def stale(self, limits: LimitSet, now: float) -> bool:
        """Whether the budget must be (re)loaded before this request."""
        return limits.token_budget is not None and (
            self.period != limits.budget_period or now >= self.period_end
        )


Entry = tuple[_Subject, LimitSet]


class Admission:
    """An admitted request: what ``release`` gives back, the headers to answer with."""

    __slots__ = ("entries", "headers", "released")

    def __init__(self, entries: tuple[Entry, ...], headers: dict[str, str]) -> None:
        self.entries = entries
        self.headers = headers
        self.released = False


class Limiter:
    def __init__(
        self,
        used_tokens: UsedTokens,
        *,
        clock: Callable[[], float] = time.time,
        window: float = WINDOW,
    ) -> None:
        self._used_tokens = used_tokens
        self._clock = clock
        self._window = window
        self._keys: dict[str, _Subject] = {}
        self._users: dict[str, _Subject] = {}
        self._loads: SingleFlight[tuple[str, str, str, float], int] = SingleFlight()

    async def admit(self, caller: Caller) -> Admission:
        entries = self._entries(caller)
        for subject, limits in entries:
            if subject.stale(limits, self._clock()):
                await self._seed(subject, limits)
        now = self._clock()
        cutoff = now - self._window
        for subject, limits in entries:
            subject.trim(cutoff)
            if _over(subject, limits):
                raise self._refusal(entries, now)
        for subject, _ in entries:
            subject.requests.append(now)
            subject.in_flight += 1
        return Admission(entries, self._headers(entries, now))

    def release(self, admission: Admission, prompt_tokens: int, completion_tokens: int) -> None:
        if admission.released:
            return
        admission.released = True
        tokens = max(0, prompt_tokens) + max(0, completion_tokens)
        now = self._clock()
        for subject, limits in admission.entries:
            subject.in_flight -= 1
            if not tokens:
                continue
            if limits.tpm is not None:
                subject.tokens.append((now, tokens))
                subject.window_tokens += tokens
            if subject.period is not None and now < subject.period_end:
                subject.used += tokens

    def headers(self, caller: Caller) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for an answer that admitted nothing."""
        now = self._clock()
        entries = self._entries(caller)
        for subject, _ in entries:
            subject.trim(now - self._window)
        return self._headers(entries, now)

    def restore(self, events: Iterable[Event]) -> None:
        """Rebuild the windows from requests completed in the last ``window``
        seconds (e.g. read back from the usage journal after a restart)."""
        now = self._clock()
        cutoff = now - self._window
        touched: set[_Subject] = set()
        for at, key_id, user_id, tokens in events:
            if not cutoff < at <= now:
                continue
            subjects = [self._subject(self._users, "user", user_id)]
            if key_id:
                subjects.append(self._subject(self._keys, "key", key_id))
            for subject in subjects:
                subject.requests.append(at)
                subject.tokens.append((at, tokens))
                subject.window_tokens += tokens
                touched.add(subject)
        for subject in touched:  # keep each window in time order
            subject.requests = deque(sorted(subject.requests))
            subject.tokens = deque(sorted(subject.tokens))

    # ------------------------------------------------------------ internals

    def _entries(self, caller: Caller) -> tuple[Entry, ...]:
        key_limits, user_limits = caller.key_limits, caller.user_limits
        key_id = caller.api_key_id
        if key_limits is not None and key_id is not None:
            key = (self._subject(self._keys, "key", key_id), key_limits)
            if user_limits is None:
                return (key,)
            return (key, (self._subject(self._users, "user", caller.user_id), user_limits))
        if user_limits is not None:
            return ((self._subject(self._users, "user", caller.user_id), user_limits),)
        return ()

    @staticmethod
    def _subject(table: dict[str, _Subject], kind: str, id: str) -> _Subject:
        subject = table.get(id)
        if subject is None:
            subject = table[id] = _Subject(kind, id)
        return subject

    async def _seed(self, subject: _Subject, limits: LimitSet) -> None:
        period = limits.budget_period or "month"
        start, end = period_bounds(period, datetime.fromtimestamp(self._clock(), UTC))
        used = await self._loads.run(
            (subject.kind, subject.id, period, start.timestamp()),
            lambda: self._used_tokens(subject.kind, subject.id, start, end),
        )
        if subject.period != period or subject.period_end != end.timestamp():
            # The first waiter sets it; later ones keep what was counted since.
            subject.period, subject.period_end, subject.used = period, end.timestamp(), used

    def _refusal(self, entries: tuple[Entry, ...], now: float) -> RateLimited:
        """The refusal that lasts longest, of every limit the request is over."""
        window = self._window
        refusals = [r for s, limits in entries for r in _refusals(s, limits, now, window)]
        code, retry_after, who = max(refusals, key=lambda r: r[1])
        budget = code == "token_budget"
        headers = refusal_headers(self._headers(entries, now), retry_after, final=budget)
        return RateLimited(
            f"Rate limit reached for {who}: {_MESSAGES[code]}; retry in {retry_after:.3f} s",
            type="insufficient_quota" if budget else "rate_limit_exceeded",
            code=code,
            retry_after=retry_after,
            headers=headers,
        )

    def _headers(self, entries: tuple[Entry, ...], now: float) -> dict[str, str]:
        """The stricter subject's numbers: the least remaining requests and tokens
        (requests from ``rpm``, else ``max_parallel``; tokens from ``tpm`` and budgets)."""
        requests: Numbers | None = None
        parallel: Numbers | None = None
        tokens: Numbers | None = None
        window = self._window
        for subject, limits in entries:
            rpm, tpm, budget = limits.rpm, limits.tpm, limits.token_budget
            if rpm is not None:
                times = subject.requests
                reset = times[-1] + window - now if times else 0.0
                requests = _stricter(requests, (rpm - len(times), rpm, reset))
            elif limits.max_parallel is not None:
                free = limits.max_parallel - subject.in_flight
                retry = 0.0 if free > 0 else PARALLEL_RETRY
                parallel = _stricter(parallel, (free, limits.max_parallel, retry))
            if tpm is not None:
                done = subject.tokens
                reset = done[-1][0] + window - now if done else 0.0
                tokens = _stricter(tokens, (tpm - subject.window_tokens, tpm, reset))
            if budget is not None:
                left = (budget - subject.used, budget, subject.period_end - now)
                tokens = _stricter(tokens, left)
        return rate_headers(requests or parallel, tokens)


_MESSAGES = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "max_parallel": "requests in flight",
    "token_budget": "token budget of this period exhausted",
}


def _over(subject: _Subject, limits: LimitSet) -> bool:
    return (
        (limits.rpm is not None and len(subject.requests) >= limits.rpm)
        or (limits.tpm is not None and subject.window_tokens >= limits.tpm)
        or (limits.max_parallel is not None and subject.in_flight >= limits.max_parallel)
        or (limits.token_budget is not None and subject.used >= limits.token_budget)
    )


def _refusals(
    subject: _Subject, limits: LimitSet, now: float, window: float
) -> Iterable[tuple[str, float, str]]:
    """(code, seconds until admitted, whose limit) for each limit ``subject`` is over."""
    who = f"{subject.kind} {subject.id}"
    if limits.token_budget is not None and subject.used >= limits.token_budget:
        yield "token_budget", subject.period_end - now, who
    if limits.rpm is not None and len(subject.requests) >= limits.rpm:
        # The slot frees when the request rpm places back leaves the window.
        yield "rpm", subject.requests[-limits.rpm] + window - now, who
    if limits.tpm is not None and subject.window_tokens >= limits.tpm:
        yield "tpm", _tokens_free_at(subject, limits.tpm) + window - now, who
    if limits.max_parallel is not None and subject.in_flight >= limits.max_parallel:
        yield "max_parallel", PARALLEL_RETRY, who


def _tokens_free_at(subject: _Subject, tpm: int) -> float:
    """When the entry leaving last before the window drops below ``tpm`` was made."""
    left = subject.window_tokens
    for at, tokens in subject.tokens:
        left -= tokens
        if left < tpm:
            return at
    return subject.tokens[-1][0]  # unreachable while window_tokens >= tpm


def _stricter(current: Numbers | None, candidate: Numbers) -> Numbers:
    """The one with fewer remaining (then the later reset), clamped at 0."""
    remaining, limit, reset = candidate
    if remaining < 0 or reset < 0:
        candidate = (max(0, remaining), limit, max(0.0, reset))
    if current is None or candidate[0] < current[0]:
        return candidate
    if candidate[0] == current[0] and candidate[2] > current[2]:
        return candidate
    return current
