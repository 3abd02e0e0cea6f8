"""A clock that moves only when a test says so.

Test controllers time their fleet's liveness with it (``tests.conftest``): a
worker whose agent is slow on a busy machine cannot miss its heartbeats by
accident, and a test about expiry makes it happen with ``advance``.
"""

from __future__ import annotations

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
