"""Supervision of instances: deploy, watch, and restart under the restart policy.

``Supervisors`` keeps one supervisor per instance the controller deployed here. A
supervisor deploys the instance's spec (``Runtime.deploy``), then probes its
container every ``health_check_interval`` seconds (``Runtime.probe``); what the
restart policy makes of a failure is ``agent.restarts``'s to say.

Guarantees:

* **Restarts without the controller.** Supervisors are tasks of the
  ``Supervisors`` context, which the agent session opens around its reconnect
  loop: they outlive connections, so an engine that fails while the controller
  is unreachable is restarted all the same. Leaving the context cancels every
  supervisor and awaits it; engine containers are left as they are.
* **What counts as a failure.** A deploy that ends in ``error`` (the engine
  exited before it was ready, or could not be started), and, once running, an
  engine whose container exited or vanished, or that failed its health check
  ``HEALTH_CHECK_FAILURES`` times in a row (its container is then stopped). A
  running engine is probed every ``health_check_interval`` seconds, and at once
  when ``nudge`` says a listing (a heartbeat's) saw its container stopped.
* **How it is answered.** Restarted after the back-off: reported first as
  ``error`` with ``final`` false, the exit code, ``restarts`` and a message such
  as ``engine exited with code 3; restart 2 in 20 s; last log lines: …``; after
  the wait the spec is deployed again with ``restarts`` one higher, reporting
  ``pending`` → ``starting`` → ``running`` as a deploy does. Or not restarted
  (policy ``never``, a clean exit under ``on-failure``, ``max_restarts``
  reached): one ``error`` with ``final`` true saying why, and nothing more.
* **Reports.** Every report carries the instance and deployment ids and
  ``restarts``: the most of the Deploy's, an adopted container's label and the
  agent's own count. The runtime's ``error`` is held back until the policy has
  decided, then sent once with its decision. Reports go to the attached
  reporter (the live connection); while none is attached they are dropped: the
  next Hello lists the containers with their restarts, and the Deploys that
  follow it are answered with the current state.
* **Deploys** (``deploy``; the newest Deploy's config applies). For the spec
  hash the instance already runs: an attempt in progress is joined; a running
  instance is deployed again (the runtime adopts its container); a pending
  restart keeps its time, the new config decides again (it may make the error
  final) and the state is reported again; a final error is restarted at once
  if the new config would restart it, else reported again. For another spec the
  old supervisor is cancelled and a new one starts, its back-off afresh, its
  restart count going on. ``deploy`` returns once the attempt has an outcome
  (``running``, or an ``error`` report).
* **Stops.** ``cancel`` cuts a supervisor short at once (a Stop superseding a
  deploy, or a pending restart); ``forget`` cancels it, waits for it to end and
  forgets the instance, so the Stop that follows never meets a restart.

Concurrency model: the event loop only. ``deploy``, ``cancel`` and ``forget``
change the bookkeeping before their first ``await``, so a caller cancelled while
it waits leaves it consistent; a new supervisor first waits for the end of the
one it replaces, so two never work on one instance's container at once, and a
superseded one's late reports are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

from agent.restarts import (
    HEALTH_CHECK_FAILURES,
    Failure,
    RestartBackoff,
    RestartTimings,
    refusal,
    restart_note,
    with_note,
)
from agent.types import (
    ERROR,
    RUNNING,
    ContainerState,
    DeploySpec,
    Reporter,
    Runtime,
    StatusUpdate,
    spec_hash,
)

logger = logging.getLogger("lmstack.agent.supervisor")

# Lines of an engine's log quoted when it failed while running.
LOG_TAIL_LINES = 20
_EXITED = frozenset({"exited", "dead"})


class Phase(StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    BACKING_OFF = "backing-off"
    FINAL = "final"


@dataclass(eq=False)
class _Instance:
    spec: DeploySpec
    backoff: RestartBackoff
    restarts: int = 0
    phase: Phase = Phase.DEPLOYING
    task: asyncio.Task[None] | None = None
    # Set once the current attempt has an outcome (running, or an error report).
    outcome: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a newer Deploy of the same spec while a restart is pending.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a heartbeat's listing saw the running engine's container stopped.
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    # The failure the pending restart or the final error answers.
    failure: Failure | None = None
    last: StatusUpdate | None = None
    container_id: str = ""
    started_at: str = ""
    # The container seen running, and since when (the supervisors' clock).
    running_container: str = ""
    running_since: float = 0.0

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


class Supervisors:
    """The supervised instances of one agent; an async context (module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        timings: RestartTimings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._timings = timings or RestartTimings()
        self._clock = clock
        self._instances: dict[str, _Instance] = {}
        self._group: asyncio.TaskGroup | None = None
        self._report: Reporter | None = None

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
        self._report = report

    def detach(self, report: Reporter) -> None:
        """Stop sending to ``report`` (its connection ended)."""
        if self._report == report:
            self._report = None

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
        outcome (see the module docstring for an instance supervised already)."""
        instance = self._instances.get(spec.instance)
        again: StatusUpdate | None = None
        if instance is None:
            instance = _Instance(spec, RestartBackoff.of(self._timings), restarts=spec.restarts)
            self._instances[spec.instance] = instance
            self._start(instance)
        else:
            again = self._redeploy(instance, spec)
        outcome = instance.outcome
        if again is not None:
            await self._send(instance, again)
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

    def _redeploy(self, instance: _Instance, spec: DeploySpec) -> StatusUpdate | None:
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

    def _start(self, instance: _Instance, *, restart: bool = False) -> None:
        assert self._group is not None, "Supervisors used outside its context"
        previous = instance.task
        if previous is not None:
            previous.cancel()
        instance.phase = Phase.DEPLOYING
        instance.outcome = asyncio.Event()
        instance.wake = asyncio.Event()
        instance.task = self._group.create_task(
            self._supervise(instance, previous, instance.outcome, restart=restart),
            name=f"lmstack-supervise-{instance.spec.instance}",
        )

    # -- one supervisor ---------------------------------------------------------------

    async def _supervise(
        self,
        instance: _Instance,
        previous: asyncio.Task[None] | None,
        outcome: asyncio.Event,
        *,
        restart: bool,
    ) -> None:
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

    async def _answer(self, instance: _Instance, failure: Failure, outcome: asyncio.Event) -> bool:
        """Report ``failure`` with the policy's decision; True once it is time to restart."""
        why_not = refusal(instance.spec.config, instance.restarts, failure)
        if why_not is not None:
            await self._finish(instance, failure, why_not)
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
        await self._report_failure(instance, failure, restart_note(instance.restarts + 1, delay))
        outcome.set()
        return await self._back_off(instance, failure, delay)

    async def _attempt(self, instance: _Instance, outcome: asyncio.Event) -> Failure:
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
            update = self._stamp(instance, update)
            await self._send(instance, update)
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
            error = self._stamp(instance, held[-1])
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
        return await self._watch(instance)

    async def _watch(self, instance: _Instance) -> Failure:
        """Probe the running engine until it fails."""
        instance_id = instance.spec.instance
        failed_checks = 0
        instance.poke.clear()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timings.health_check_interval):
                    await instance.poke.wait()
            instance.poke.clear()  # a nudge during the probe below makes another one
            try:
                probe = await self._runtime.probe(instance_id)
            except Exception as exc:
                # The runtime cannot be asked (Docker restarting): no verdict on the engine.
                logger.debug("instance %s: probe failed: %s", instance_id, exc)
                continue
            ran_for = self._clock() - instance.running_since
            if probe.state in _EXITED:
                why = " (killed: out of memory)" if probe.oom else ""
                message = await self._with_logs(
                    instance_id, f"engine exited with code {probe.exit_code}{why}"
                )
                return Failure("exited", message, probe.exit_code, ran_for)
            if not probe.state:
                return Failure("failed", "the engine container disappeared", None, ran_for)
            failed_checks = 0 if probe.healthy else failed_checks + 1
            if failed_checks >= HEALTH_CHECK_FAILURES:
                message = await self._with_logs(
                    instance_id, f"engine failed its health check {failed_checks} times in a row"
                )
                await self._runtime.stop(
                    instance_id, False, _ignore, cluster_id=instance.spec.cluster_id
                )
                return Failure("unhealthy", message, None, ran_for)

    async def _back_off(self, instance: _Instance, failure: Failure, delay: float) -> bool:
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
            why_not = refusal(instance.spec.config, instance.restarts, failure)
            if why_not is not None:
                await self._finish(instance, failure, why_not)
                return False
            left = max(0.0, deadline - loop.time())
            await self._report_failure(instance, failure, restart_note(instance.restarts + 1, left))
        return True

    # -- reports ----------------------------------------------------------------------

    async def _finish(self, instance: _Instance, failure: Failure, why_not: str) -> None:
        instance.phase = Phase.FINAL
        instance.failure = failure
        logger.warning(
            "instance %s: %s; not restarted: %s",
            instance.spec.instance, failure.message.partition("\n")[0], why_not,
        )  # fmt: skip
        await self._report_failure(instance, failure, f"not restarted: {why_not}", final=True)

    async def _report_failure(
        self, instance: _Instance, failure: Failure, note: str, *, final: bool = False
    ) -> None:
        update = instance.spec.status_update(
            ERROR,
            with_note(failure.message, note),
            container_id=instance.container_id,
            exit_code=failure.exit_code,
            restarts=instance.restarts,
            started_at=instance.started_at,
            final=final,
        )
        await self._send(instance, update)

    def _stamp(self, instance: _Instance, update: StatusUpdate) -> StatusUpdate:
        """``update`` with the instance's ids and restart count; remembers what it says."""
        instance.restarts = max(instance.restarts, update.restarts)
        if update.container_id:
            instance.container_id = update.container_id
        if update.started_at:
            instance.started_at = update.started_at
        return dataclasses.replace(
            update,
            deployment_id=update.deployment_id or instance.spec.deployment_id,
            restarts=instance.restarts,
        )

    async def _send(self, instance: _Instance, update: StatusUpdate) -> None:
        instance.last = update
        if self._report is not None:
            await self._report(update)
        else:
            logger.debug("instance %s: %s, not sent", update.instance_id, update.status)

    async def _with_logs(self, instance_id: str, message: str) -> str:
        try:
            tail = (await self._runtime.logs(instance_id, LOG_TAIL_LINES)).rstrip("\n")
        except Exception as exc:
            logger.debug("instance %s: no logs: %s", instance_id, exc)
            return message
        return f"{message}; last log lines:\n{tail}" if tail else message


async def _ignore(update: StatusUpdate) -> None:
    """The reports of a stop the supervisor makes itself (an unhealthy engine's)."""
