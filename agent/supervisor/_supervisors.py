"""``Supervisors``: the registry and owner of one agent's supervisor tasks.

It keeps one ``Instance`` per instance the controller deployed here, and starts,
replaces and cancels its supervisor task (``_supervise``) as Deploys and Stops
come; the package docstring states what a Deploy of an instance supervised
already does, and what ``cancel`` and ``forget`` promise.

Ownership: the tasks live in the context's ``TaskGroup``, so none outlives it;
leaving the context cancels every one and awaits it (engine containers are left
as they are), and whatever ended the body propagates as it is.

Concurrency model: the event loop only. ``deploy``, ``cancel`` and ``forget``
change the bookkeeping before their first ``await``, so a caller cancelled while
it waits leaves it consistent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from agent.restarts import RestartBackoff, RestartTimings, refusal
from agent.supervisor._instance import Instance, Phase
from agent.supervisor._outlet import Outlet
from agent.supervisor._supervise import Supervision
from agent.types import ContainerState, DeploySpec, Reporter, Runtime, StatusUpdate, spec_hash

logger = logging.getLogger("lmstack.agent.supervisor")


class Supervisors:
    """The supervised instances of one agent; an async context (package docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        timings: RestartTimings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timings = timings or RestartTimings()
        self._outlet = Outlet()
        self._supervision = Supervision(runtime, self._timings, clock, self._outlet)
        self._instances: dict[str, Instance] = {}
        self._group: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for instance in self._instances.values():
            if instance.task is not None:
                instance.task.cancel()
        group, self._group = self._group, None
        assert group is not None
        # Only the supervisors' ends are the group's to wait for: whatever ended
        # the body (a refusal, a cancellation) propagates as it is, not wrapped.
        await group.__aexit__(None, None, None)

    # -- where reports go -------------------------------------------------------------

    def attach(self, report: Reporter) -> None:
        """Send reports to ``report`` (the connection that just got its Welcome)."""
        self._outlet.attach(report)

    def detach(self, report: Reporter) -> None:
        """Stop sending to ``report`` (its connection ended)."""
        self._outlet.detach(report)

    # -- queries ----------------------------------------------------------------------

    def supervised(self, instance_id: str) -> bool:
        return instance_id in self._instances

    def restarts(self, instance_id: str) -> int:
        instance = self._instances.get(instance_id)
        return 0 if instance is None else instance.restarts

    def phase(self, instance_id: str) -> Phase | None:
        instance = self._instances.get(instance_id)
        return None if instance is None else instance.phase

    def overlay(self, containers: list[ContainerState]) -> list[ContainerState]:
        """``containers`` with the restarts counted here where they exceed the label."""
        return [
            dataclasses.replace(c, restarts=counted)
            if (counted := self.restarts(c.instance_id)) > c.restarts
            else c
            for c in containers
        ]

    # -- commands ---------------------------------------------------------------------

    async def deploy(self, spec: DeploySpec) -> None:
        """Supervise ``spec``'s instance; returns once this Deploy's attempt has an
        outcome (see the package docstring for an instance supervised already)."""
        instance = self._instances.get(spec.instance)
        again: StatusUpdate | None = None
        if instance is None:
            instance = Instance(spec, RestartBackoff.of(self._timings), restarts=spec.restarts)
            self._instances[spec.instance] = instance
            self._start(instance)
        else:
            again = self._redeploy(instance, spec)
        outcome = instance.outcome
        if again is not None:
            await self._outlet.send(instance, again)
        await outcome.wait()

    def nudge(self, instance_id: str) -> None:
        """Probe the instance now, not at its next interval (a listing saw its
        container stopped); only a running instance is probed."""
        instance = self._instances.get(instance_id)
        if instance is not None and instance.phase is Phase.RUNNING:
            instance.poke.set()

    def cancel(self, instance_id: str) -> None:
        """Cut the instance's supervisor short now (a Stop is coming)."""
        instance = self._instances.get(instance_id)
        if instance is not None and instance.task is not None:
            instance.task.cancel()

    async def forget(self, instance_id: str) -> None:
        """Cancel the instance's supervisor, wait for its end, forget the instance."""
        instance = self._instances.pop(instance_id, None)
        if instance is not None and instance.task is not None:
            instance.task.cancel()
            await asyncio.wait([instance.task])

    def _redeploy(self, instance: Instance, spec: DeploySpec) -> StatusUpdate | None:
        """A Deploy for a supervised instance; a report to send again, if any."""
        same = spec_hash(spec) == spec_hash(instance.spec)
        instance.restarts = max(instance.restarts, spec.restarts)
        instance.spec = spec
        if not same:
            logger.info("instance %s: new spec, deploying it", spec.instance)
            instance.backoff.reset()
            self._start(instance)
        elif instance.phase is Phase.FINAL:
            failure = instance.failure
            if failure is not None and refusal(spec.config, instance.restarts, failure) is None:
                self._start(instance, restart=True)
            else:
                return instance.last
        elif not instance.alive:
            self._start(instance)  # cut short by a Stop that was then dropped
        elif instance.phase is Phase.BACKING_OFF:
            instance.wake.set()
        elif instance.phase is Phase.RUNNING:
            self._start(instance)  # the runtime checks, and adopts, what runs
        return None

    def _start(self, instance: Instance, *, restart: bool = False) -> None:
        assert self._group is not None, "Supervisors used outside its context"
        previous = instance.task
        if previous is not None:
            previous.cancel()
        instance.phase = Phase.DEPLOYING
        instance.outcome = asyncio.Event()
        instance.wake = asyncio.Event()
        instance.task = self._group.create_task(
            self._supervision.run(instance, previous, instance.outcome, restart=restart),
            name=f"lmstack-supervise-{instance.spec.instance}",
        )
