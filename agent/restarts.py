"""The restart policy's arithmetic and decisions: pure functions, no I/O, no clock.

What ``agent.supervisor`` asks, answered here so it can be tested on its own:

* **Whether to restart** (``refusal``): ``config.restart_policy`` ``never`` restarts
  nothing; ``on-failure`` (the default) restarts an engine that exited with a
  non-zero code, failed its health check ``HEALTH_CHECK_FAILURES`` times in a row,
  or could not be started at all (pull, port, readiness timeout); ``always``
  restarts on any exit, code 0 too. ``config.max_restarts`` (unset: unlimited)
  ends the restarts once that many were made.
* **When** (``RestartBackoff``): Kubernetes' CrashLoopBackOff. The first restart
  waits ``initial`` seconds (10), each further one twice the last, at most
  ``cap`` (300); an engine that had run healthy for ``reset_after`` seconds (600)
  before it failed starts over at ``initial``.
* **What the report says** (``with_note``): the failure, then what happens next
  (``restart 2 in 20 s`` or ``not restarted: …``), then the engine's last log lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.engines import EngineConfig

# Failed health checks in a row, of a running engine, that count as a failure.
HEALTH_CHECK_FAILURES = 3
LOG_LINES_MARK = "; last log lines:"

FailureKind = Literal["exited", "unhealthy", "failed"]


@dataclass(frozen=True)
class RestartTimings:
    """How long the restart policy waits (seconds); short ones in tests."""

    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    reset_after: float = 600.0
    health_check_interval: float = 10.0


@dataclass(frozen=True)
class Failure:
    """Why an instance's engine is not running.

    ``exited``: the engine's process ended (``exit_code``); ``unhealthy``: it ran
    but failed its health check ``HEALTH_CHECK_FAILURES`` times in a row;
    ``failed``: it could not be brought up (no exit code: a pull, a port, a
    readiness timeout, a container that vanished).
    """

    kind: FailureKind
    message: str
    exit_code: int | None = None
    # Seconds it had run healthy before it failed; ``None``: it never got there.
    ran_for: float | None = None

    @property
    def clean_exit(self) -> bool:
        return self.kind == "exited" and self.exit_code == 0


def refusal(config: EngineConfig, restarts: int, failure: Failure) -> str | None:
    """Why ``failure`` is not restarted under ``config`` after ``restarts``
    restarts; ``None``: it is restarted."""
    policy = config.effective_restart_policy
    if policy == "never":
        return "restart policy is never"
    if policy == "on-failure" and failure.clean_exit:
        return "it exited with code 0 and the restart policy is on-failure"
    if config.max_restarts is not None and restarts >= config.max_restarts:
        return f"max_restarts ({config.max_restarts}) reached"
    return None


class RestartBackoff:
    """The delays before consecutive restarts of one instance (module docstring)."""

    def __init__(self, initial: float, cap: float, reset_after: float) -> None:
        self._initial = initial
        self._cap = cap
        self._reset_after = reset_after
        self._failures = 0

    @classmethod
    def of(cls, timings: RestartTimings) -> RestartBackoff:
        return cls(timings.backoff_initial, timings.backoff_max, timings.reset_after)

    def next_delay(self, ran_for: float | None = None) -> float:
        """The wait before the restart that answers a failure after ``ran_for``
        seconds of healthy running (``None``: it never ran healthy)."""
        if ran_for is not None and ran_for >= self._reset_after:
            self._failures = 0
        # The exponent is bounded so a week of crashes cannot overflow the float.
        delay: float = min(self._cap, self._initial * 2.0 ** min(self._failures, 32))
        self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0


def with_note(message: str, note: str) -> str:
    """``message`` with ``note`` after its first part and before its log lines:
    ``engine exited with code 3; restart 2 in 20 s; last log lines: …``."""
    head, mark, logs = message.partition(LOG_LINES_MARK)
    return f"{head}; {note}{mark}{logs}"


def restart_note(restart: int, delay: float) -> str:
    return f"restart {restart} in {delay:.3g} s"
