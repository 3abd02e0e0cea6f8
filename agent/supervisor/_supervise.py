"""One instance's supervisor: deploy, watch, answer a failure, restart.

``Supervision.run`` is the body of an instance's supervisor task (the registry,
``_supervisors``, creates and cancels it). It first waits for the end of the task
it replaces, so two never work on one instance's container at once. Then, in a
loop: deploy the spec (``Runtime.deploy``) and, once running, ``watch`` it; ask
the restart policy (``agent.restarts.refusal``) about the failure; report it once
with the decision; either end (a final error) or back off and deploy again with
``restarts`` one higher.

Guarantees:

* The runtime's ``error`` is held back until the policy has decided, then sent
  once with its decision; every other report is stamped with the instance's ids
  and restart count and sent as it comes. A superseded task's late reports (the
  instance's task is no longer this one) are dropped.
* ``outcome`` (the Deploy's wait) is set once the attempt is running or its error
  has been reported, and at the latest when the task ends, however it ends.
* While backing off, a newer Deploy's ``wake`` makes the policy decide again under
  the new config (it may make the error final) and the pending restart is
  reported again with the time left; the restart keeps its time.
* A bug here does not end the agent: it is logged and reported as a final error.

Event loop only; the task is cancelled at any ``await`` and leaves the
bookkeeping consistent (phases are set before the awaits that follow them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from agent.restarts import Failure, RestartTimings, refusal, restart_note
from agent.supervisor._instance import Instance, Phase
from agent.supervisor._outlet import Outlet
from agent.supervisor._watch import watch
from agent.types import ERROR, RUNNING, Runtime, StatusUpdate

logger = logging.getLogger("lmstack.agent.supervisor")


class Supervision:
    """What every supervisor task of one agent shares: runtime, timings, clock, outlet."""

    def __init__(
        self,
        runtime: Runtime,
        timings: RestartTimings,
        clock: Callable[[], float],
        outlet: Outlet,
    ) -> None:
        self._runtime = runtime
        self._timings = timings
        self._clock = clock
        self._outlet = outlet

    async def run(
        self,
        instance: Instance,
        previous: asyncio.Task[None] | None,
        outcome: asyncio.Event,
        *,
        restart: bool,
    ) -> None:
        """Supervise ``instance`` until its error is final or the task is cancelled."""
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if restart:
                instance.restarts += 1
            while True:
                failure = await self._attempt(instance, outcome)
                if not await self._answer(instance, failure, outcome):
                    return
                instance.restarts += 1
                outcome = instance.outcome = asyncio.Event()
        except Exception as exc:
            # A bug here must not end the agent; the instance stays in error.
            logger.exception("instance %s: supervisor failed", instance.spec.instance)
            failure = Failure("failed", f"agent error: {exc!r}")
            await self._finish(instance, failure, "the agent's supervisor failed")
        finally:
            outcome.set()

    async def _attempt(self, instance: Instance, outcome: asyncio.Event) -> Failure:
        """Deploy once and, once running, watch; how the engine failed."""
        instance.phase = Phase.DEPLOYING
        me = asyncio.current_task()
        held: list[StatusUpdate] = []
        running: list[StatusUpdate] = []

        async def relay(update: StatusUpdate) -> None:
            if instance.task is not me:
                return  # a superseded supervisor's late report
            if update.status == ERROR:
                held.append(update)  # sent once the policy has decided
                return
            update = instance.stamp(update)
            await self._outlet.send(instance, update)
            if update.status == RUNNING:
                running.append(update)
                outcome.set()

        spec = dataclasses.replace(instance.spec, restarts=instance.restarts)
        try:
            await self._runtime.deploy(spec, relay)
        except Exception as exc:
            # The runtime reports its failures; one that raises is a failed start too.
            logger.exception("instance %s: deploy raised", spec.instance)
            return Failure("failed", f"agent error: {exc!r}")
        if held:
            error = instance.stamp(held[-1])
            message = error.message or "deploy failed"
            if error.exit_code is None:
                return Failure("failed", message)
            return Failure("exited", message, error.exit_code)
        if not running:
            return Failure("failed", "the runtime reported neither running nor an error")
        container_id = running[-1].container_id
        instance.phase = Phase.RUNNING
        if container_id != instance.running_container:
            instance.running_container = container_id
            instance.running_since = self._clock()
        return await watch(
            self._runtime, instance, self._timings.health_check_interval, self._clock
        )

    async def _answer(self, instance: Instance, failure: Failure, outcome: asyncio.Event) -> bool:
        """Report ``failure`` with the policy's decision; True once it is time to restart."""
        if await self._refused(instance, failure):
            return False
        delay = instance.backoff.next_delay(failure.ran_for)
        instance.wake.clear()  # from here on a Deploy's wake-up is seen by ``_back_off``
        instance.phase = Phase.BACKING_OFF
        instance.failure = failure
        logger.warning(
            "instance %s: %s; restart %d in %.3g s",
            instance.spec.instance, failure.message.partition("\n")[0],
            instance.restarts + 1, delay,
        )  # fmt: skip
        await self._report_pending(instance, failure, delay)
        outcome.set()
        return await self._back_off(instance, failure, delay)

    async def _back_off(self, instance: Instance, failure: Failure, delay: float) -> bool:
        """Wait ``delay`` s; a newer Deploy's config decides again. True: restart now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    await instance.wake.wait()
            except TimeoutError:
                break
            instance.wake.clear()
            if await self._refused(instance, failure):
                return False
            await self._report_pending(instance, failure, max(0.0, deadline - loop.time()))
        return True

    async def _refused(self, instance: Instance, failure: Failure) -> bool:
        """Whether the policy refuses to restart ``failure``; if so it is reported final."""
        why_not = refusal(instance.spec.config, instance.restarts, failure)
        if why_not is not None:
            await self._finish(instance, failure, why_not)
        return why_not is not None

    async def _finish(self, instance: Instance, failure: Failure, why_not: str) -> None:
        instance.phase = Phase.FINAL
        instance.failure = failure
        logger.warning(
            "instance %s: %s; not restarted: %s",
            instance.spec.instance, failure.message.partition("\n")[0], why_not,
        )  # fmt: skip
        note = f"not restarted: {why_not}"
        await self._outlet.send(instance, instance.error_report(failure, note, final=True))

    async def _report_pending(self, instance: Instance, failure: Failure, delay: float) -> None:
        note = restart_note(instance.restarts + 1, delay)
        await self._outlet.send(instance, instance.error_report(failure, note, final=False))
