"""A clock that moves only when a test says so.

Test controllers time their fleet's liveness with it (``tests.conftest``): a
worker whose agent is slow on a busy machine cannot miss its heartbeats by
accident, and a test about expiry makes it happen with ``advance``. Their
gateway's rate windows run on a ``WallClock`` a test can skip forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ManualClock:
    """Seconds, like ``time.monotonic``; starts at ``now`` and holds still."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock does not go back"
        self.now += seconds


@dataclass
class WallClock:
    """Unix seconds, like ``time.time``, ``offset`` ahead: a test skips time
    forward with ``advance`` while real time still runs (so a client that waits
    a server's ``Retry-After`` sees the time move on as it waits)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "skipping back is not a thing clocks do"
        self.offset += seconds
