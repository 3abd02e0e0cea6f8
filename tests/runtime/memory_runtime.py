"""A ``Runtime`` that keeps its containers in a dict: no Docker, no engine.

Used by the agent's tests and by the fleet-scale benchmark (a thousand
simulated agents in one process), so every operation is O(1) or O(containers)
and none starts a task or touches the disk.

Behaviour mirrors ``DockerRuntime`` as ``agent.types.Runtime`` documents it:

* ``deploy`` reports ``pending`` → ``starting`` → ``running`` with a fake
  64-hex container id; a running container of the same spec hash is left
  alone (one ``running`` report); another spec replaces the container.
* ``stop`` reports ``stopping`` → ``stopped``; the container stays ``exited``
  unless ``remove`` is set. Stopping an unknown deployment just reports
  ``stopped`` (commands are idempotent). A container labelled with another
  cluster than the stop's is refused (``error``) and left running.
* Containers carry the spec's cluster id; ``plant`` adds one as another
  cluster's agent would have made it.
* ``logs`` returns the recorded lines; ``ContainerError`` for an unknown
  deployment.
* ``follow_logs`` yields the last ``tail`` recorded lines, then every line
  recorded later (``append_log``, a deploy, ``exit_container``), and ends
  once the container is no longer running or was replaced or removed.

Test hooks: ``exit_container`` makes a container exit with a code (as an
engine crash would), ``gate`` holds a deployment's next deploy between
``pending`` and ``starting`` until the test releases it, ``fail_next_deploy``
makes one deploy report ``error``, ``events`` records every call and
``specs`` the latest spec per deployment, ``append_log`` writes lines to a
container's log as a running engine would, ``followers`` counts its live
log follows.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.types import (
    ERROR,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    ContainerState,
    DeploySpec,
    Reporter,
    RuntimeInfo,
    StatusUpdate,
    spec_hash,
)
from shared.errors import ContainerError
from shared.status import DeploymentStatus


@dataclass
class _Container:
    deployment_id: str
    container_id: str
    name: str
    image: str
    host_port: int
    spec_hash: str
    state: str = "created"
    exit_code: int = 0
    started_at: str = ""
    cluster_id: str = ""
    log_lines: list[str] = field(default_factory=list)
    # Set (and dropped) whenever its log or state changes; followers wait on them.
    waiters: set[asyncio.Event] = field(default_factory=set)

    def changed(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    def snapshot(self) -> ContainerState:
        return ContainerState(
            deployment_id=self.deployment_id,
            container_id=self.container_id,
            name=self.name,
            state=self.state,
            image=self.image,
            host_port=self.host_port,
            spec_hash=self.spec_hash,
            exit_code=self.exit_code,
            started_at=self.started_at,
            cluster_id=self.cluster_id,
        )


class MemoryRuntime:
    """Engine containers as plain records; see the module docstring."""

    def __init__(self, *, available: bool = True, error: str = "", version: str = "memory") -> None:
        self._info = RuntimeInfo(available=available, version=version, error=error)
        self._containers: dict[str, _Container] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._failures: dict[str, str] = {}
        self.events: list[tuple[str, str]] = []
        # The spec of each deployment's latest deploy call, for assertions.
        self.specs: dict[str, DeploySpec] = {}

    async def info(self) -> RuntimeInfo:
        return self._info

    async def list_containers(self) -> list[ContainerState]:
        return [container.snapshot() for container in self._containers.values()]

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        self.events.append(("deploy", spec.deployment_id))
        self.specs[spec.deployment_id] = spec
        digest = spec_hash(spec)
        current = self._containers.get(spec.deployment_id)
        if current is not None and current.state == RUNNING and current.spec_hash == digest:
            await report(self._update(current, RUNNING, "already running"))
            return
        await report(StatusUpdate(spec.deployment_id, PENDING, port=spec.host_port))
        gate = self._gates.pop(spec.deployment_id, None)
        if gate is not None:
            await gate.wait()
        failure = self._failures.pop(spec.deployment_id, None)
        if failure is not None:
            self._containers.pop(spec.deployment_id, None)
            await report(StatusUpdate(spec.deployment_id, ERROR, failure, port=spec.host_port))
            return
        container = self._create(spec, digest)
        await report(self._update(container, STARTING))
        container.state = RUNNING
        container.started_at = _now()
        container.log_lines.append(f"engine {spec.backend} serving {spec.model}")
        container.changed()
        await report(self._update(container, RUNNING))
        self.events.append(("deployed", spec.deployment_id))

    async def stop(
        self, deployment_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        self.events.append(("stop", deployment_id))
        container = self._containers.get(deployment_id)
        if container is None:
            await report(StatusUpdate(deployment_id, STOPPED))
            return
        if cluster_id and container.cluster_id and container.cluster_id != cluster_id:
            message = f"refused: container {container.name} belongs to LMStack cluster "
            await report(self._update(container, ERROR, message + container.cluster_id))
            return
        await report(self._update(container, STOPPING))
        if container.state == RUNNING:
            container.state = "exited"
            container.exit_code = 0
        if remove:
            del self._containers[deployment_id]
        container.changed()
        await report(self._update(container, STOPPED))
        self.events.append(("stopped", deployment_id))

    async def logs(self, deployment_id: str, lines: int) -> str:
        container = self._containers.get(deployment_id)
        if container is None:
            raise ContainerError(f"no container for deployment {deployment_id}")
        return "\n".join(container.log_lines[-lines:] if lines > 0 else container.log_lines)

    async def follow_logs(self, deployment_id: str, tail: int) -> AsyncIterator[str]:
        container = self._containers.get(deployment_id)
        if container is None:
            raise ContainerError(f"no container for deployment {deployment_id}")
        sent = max(0, len(container.log_lines) - tail)
        while True:
            if sent < len(container.log_lines):
                lines, sent = container.log_lines[sent:], len(container.log_lines)
                yield "".join(line + "\n" for line in lines)
                continue
            current = self._containers.get(deployment_id)
            if current is not container or container.state != RUNNING:
                return
            waiter = asyncio.Event()
            container.waiters.add(waiter)
            try:
                await waiter.wait()
            finally:
                container.waiters.discard(waiter)

    async def close(self) -> None:
        """Nothing to release; present so callers treat every runtime alike."""

    # -- test hooks ----------------------------------------------------------------

    def exit_container(self, deployment_id: str, exit_code: int, *log_lines: str) -> None:
        """Make the deployment's container exit, as a crashing engine would."""
        container = self._containers[deployment_id]
        container.log_lines.extend(log_lines)
        container.state = "exited"
        container.exit_code = exit_code
        container.changed()

    def followers(self, deployment_id: str) -> int:
        """How many ``follow_logs`` wait on the deployment's container now."""
        container = self._containers.get(deployment_id)
        return 0 if container is None else len(container.waiters)

    def append_log(self, deployment_id: str, *lines: str) -> None:
        """Write ``lines`` to the deployment's container log, as its engine would."""
        container = self._containers[deployment_id]
        container.log_lines.extend(lines)
        container.changed()

    def gate(self, deployment_id: str) -> asyncio.Event:
        """Hold the next deploy of ``deployment_id`` after ``pending``; set to release."""
        event = asyncio.Event()
        self._gates[deployment_id] = event
        return event

    def fail_next_deploy(self, deployment_id: str, message: str) -> None:
        self._failures[deployment_id] = message

    def plant(self, spec: DeploySpec) -> ContainerState:
        """A running container of ``spec`` (labelled ``spec.cluster_id``), made
        without a deploy, as another controller's agent on this host made it."""
        container = self._create(spec, spec_hash(spec))
        container.state = RUNNING
        container.started_at = _now()
        return container.snapshot()

    # -- internals -----------------------------------------------------------------

    def _create(self, spec: DeploySpec, digest: str) -> _Container:
        container = _Container(
            deployment_id=spec.deployment_id,
            container_id=secrets.token_hex(32),
            name=f"lmstack-{spec.name}",
            image=spec.image,
            host_port=spec.host_port,
            spec_hash=digest,
            cluster_id=spec.cluster_id,
        )
        # Replaces any container of another spec, like DockerRuntime does.
        replaced = self._containers.get(spec.deployment_id)
        self._containers[spec.deployment_id] = container
        if replaced is not None:
            replaced.changed()
        return container

    @staticmethod
    def _update(container: _Container, status: DeploymentStatus, message: str = "") -> StatusUpdate:
        return StatusUpdate(
            deployment_id=container.deployment_id,
            status=status,
            message=message,
            container_id=container.container_id,
            port=container.host_port,
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
