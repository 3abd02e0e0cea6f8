"""Watching a running engine: probe its container until it fails, say how.

``watch`` probes every ``interval`` seconds (``Runtime.probe``), and at once when
the instance's ``poke`` is set (a nudge set during a probe makes another one).
It returns the first failure: the container exited (its exit code, whether it was
killed for memory, its last log lines), vanished, or failed its health check
``HEALTH_CHECK_FAILURES`` times in a row (its container is then stopped). A probe
that raises (Docker restarting) is no verdict on the engine and is retried at the
next interval. The watch is the instance's supervisor task's own: it returns or
is cancelled with it, and touches only that instance's ``poke``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agent.restarts import HEALTH_CHECK_FAILURES, Failure
from agent.supervisor._instance import Instance
from agent.types import Runtime, StatusUpdate

logger = logging.getLogger("lmstack.agent.supervisor")

# Lines of an engine's log quoted when it failed while running.
LOG_TAIL_LINES = 20
_EXITED = frozenset({"exited", "dead"})


async def watch(
    runtime: Runtime, instance: Instance, interval: float, clock: Callable[[], float]
) -> Failure:
    """Probe the running engine until it fails."""
    instance_id = instance.spec.instance
    failed_checks = 0
    instance.poke.clear()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await instance.poke.wait()
        instance.poke.clear()  # a nudge during the probe below makes another one
        try:
            probe = await runtime.probe(instance_id)
        except Exception as exc:
            # The runtime cannot be asked (Docker restarting): no verdict on the engine.
            logger.debug("instance %s: probe failed: %s", instance_id, exc)
            continue
        ran_for = clock() - instance.running_since
        if probe.state in _EXITED:
            why = " (killed: out of memory)" if probe.oom else ""
            message = await _with_logs(
                runtime, instance_id, f"engine exited with code {probe.exit_code}{why}"
            )
            return Failure("exited", message, probe.exit_code, ran_for)
        if not probe.state:
            return Failure("failed", "the engine container disappeared", None, ran_for)
        failed_checks = 0 if probe.healthy else failed_checks + 1
        if failed_checks >= HEALTH_CHECK_FAILURES:
            message = await _with_logs(
                runtime,
                instance_id,
                f"engine failed its health check {failed_checks} times in a row",
            )
            await runtime.stop(instance_id, False, _ignore, cluster_id=instance.spec.cluster_id)
            return Failure("unhealthy", message, None, ran_for)


async def _with_logs(runtime: Runtime, instance_id: str, message: str) -> str:
    try:
        tail = (await runtime.logs(instance_id, LOG_TAIL_LINES)).rstrip("\n")
    except Exception as exc:
        logger.debug("instance %s: no logs: %s", instance_id, exc)
        return message
    return f"{message}; last log lines:\n{tail}" if tail else message


async def _ignore(update: StatusUpdate) -> None:
    """The reports of a stop the watch makes itself (an unhealthy engine's)."""
