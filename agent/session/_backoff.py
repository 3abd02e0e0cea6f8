"""The reconnect schedule: exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter.

    Attempt ``n`` (from 0) waits ``uniform(0, min(cap, base * 2**n))``: the full
    jitter spreads a fleet of agents that lost the controller at the same moment.
    The random source is injected so tests are deterministic.
    """

    def __init__(self, cap: float, *, base: float = 0.5, rng: random.Random) -> None:
        self._cap = cap
        self._base = base
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        # The exponent is bounded so a week-long outage cannot overflow the float.
        ceiling = min(self._cap, self._base * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
