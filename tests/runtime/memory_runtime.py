"""A ``Runtime`` that keeps its containers in a dict: no Docker, no engine.

Used by the agent's tests and by the fleet-scale benchmark (a thousand
simulated agents in one process), so every operation is O(1) or O(containers)
and none starts a task or touches the disk.

Behaviour mirrors ``DockerRuntime`` as ``agent.types.Runtime`` documents it:

* Containers are keyed by instance id and named
  ``lmstack-<deployment name>-<first 8 characters of the instance id>``; a spec
  without an instance id is the instance of its deployment's id.
* ``deploy`` reports ``pending`` → ``starting`` → ``running`` with a fake
  64-hex container id, ``restarts`` and ``started_at``; a running container of
  the same spec hash is left alone (one ``running`` report, with the higher of
  the spec's and the container's restarts); another spec replaces the container.
  A container made before instances (``plant(spec, legacy=True)``: no instance
  label, named ``lmstack-<name>``, the old agent's hash) is the instance of its
  deployment's id and is adopted as it is.
* ``stop`` reports ``stopping`` → ``stopped``; the container stays ``exited``
  unless ``remove`` is set. Stopping an unknown instance just reports
  ``stopped`` (commands are idempotent). A container labelled with another
  cluster than the stop's is refused (``error``) and left running.
* Containers carry the spec's cluster id; ``plant`` adds one as another
  cluster's agent would have made it.
* ``logs`` returns the recorded lines; ``ContainerError`` for an unknown
  instance.
* ``follow_logs`` yields the last ``tail`` recorded lines, then every line
  recorded later (``append_log``, a deploy, ``exit_container``), and ends
  once the container is no longer running or was replaced or removed.
* ``probe`` gives the container's state; a running one is healthy unless a test
  said otherwise (``set_healthy``).

Test hooks (each takes an instance id, or a deployment id for its first
instance, so tests written before instances keep working):
``exit_container`` makes a container exit with a code (as an engine crash
would), ``set_healthy`` makes a running engine fail (or pass) its health
checks, ``crash_next_deploy`` makes the next deploy's engine exit before it is
ready (``times`` in a row), ``gate`` holds the next deploy between ``pending`` and ``starting``
until the test releases it, ``gate_stop`` holds the next stop of an instance after
``stopping`` (its container still there, as a slow ``docker stop``),
``fail_next_deploy`` makes one deploy report ``error``, ``append_log`` writes
lines to a container's log as a running engine would, ``followers`` counts its
live log follows. ``events`` records every call as ``(kind, deployment id)``
and ``instance_events`` as ``(kind, instance id)``; ``specs`` holds the latest
spec per deployment, ``instance_specs`` per instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from agent.types import (
    ERROR,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    ContainerState,
    DeploySpec,
    Probe,
    Reporter,
    RuntimeInfo,
    StatusUpdate,
    legacy_spec_hash,
    spec_hash,
)
from shared.errors import ContainerError
from shared.status import DeploymentStatus

_T = TypeVar("_T")


@dataclass
class _Container:
    deployment_id: str
    # Empty: made before instances (the instance of its deployment's id).
    instance_label: str
    container_id: str
    name: str
    image: str
    host_port: int
    spec_hash: str
    restarts: int = 0
    state: str = "created"
    exit_code: int = 0
    started_at: str = ""
    cluster_id: str = ""
    worker_id: str = ""
    healthy: bool = True
    log_lines: list[str] = field(default_factory=list)
    # Set (and dropped) whenever its log or state changes; followers wait on them.
    waiters: set[asyncio.Event] = field(default_factory=set)

    @property
    def instance_id(self) -> str:
        return self.instance_label or self.deployment_id

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
            worker_id=self.worker_id,
            instance_id=self.instance_id,
            restarts=self.restarts,
        )

    def runs(self, spec: DeploySpec) -> bool:
        if self.state != RUNNING:
            return False
        if self.spec_hash == spec_hash(spec):
            return True
        return not self.instance_label and self.spec_hash == legacy_spec_hash(spec)


@dataclass
class _Crash:
    exit_code: int
    log_lines: tuple[str, ...]
    times: int


class MemoryRuntime:
    """Engine containers as plain records; see the module docstring."""

    def __init__(self, *, available: bool = True, error: str = "", version: str = "memory") -> None:
        self._info = RuntimeInfo(available=available, version=version, error=error)
        self._containers: dict[str, _Container] = {}  # by instance id
        self._gates: dict[str, asyncio.Event] = {}
        self._stop_gates: dict[str, asyncio.Event] = {}
        self._failures: dict[str, str] = {}
        self._crashes: dict[str, _Crash] = {}
        self.events: list[tuple[str, str]] = []
        self.instance_events: list[tuple[str, str]] = []
        # The spec of the latest deploy call, per deployment and per instance.
        self.specs: dict[str, DeploySpec] = {}
        self.instance_specs: dict[str, DeploySpec] = {}

    async def info(self) -> RuntimeInfo:
        return self._info

    async def list_containers(self) -> list[ContainerState]:
        return [container.snapshot() for container in self._containers.values()]

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        instance_id = spec.instance
        self._record("deploy", spec.deployment_id, instance_id)
        self.specs[spec.deployment_id] = spec
        self.instance_specs[instance_id] = spec
        current = self._containers.get(instance_id)
        if current is not None and current.runs(spec):
            restarts = max(spec.restarts, current.restarts)
            await report(self._update(current, RUNNING, "already running", restarts=restarts))
            return
        await report(spec.status_update(PENDING))
        gate = self._take(self._gates, spec)
        if gate is not None:
            await gate.wait()
        failure = self._take(self._failures, spec)
        if failure is not None:
            self._containers.pop(instance_id, None)
            await report(spec.status_update(ERROR, failure))
            return
        container = self._create(spec, spec_hash(spec))
        container.state = RUNNING
        container.started_at = _now()
        container.log_lines.append(f"engine {spec.backend} serving {spec.model}")
        container.changed()
        await report(self._update(container, STARTING))
        crash = self._take(self._crashes, spec)
        if crash is not None and crash.times > 1:
            self._crashes[spec.instance] = dataclasses.replace(crash, times=crash.times - 1)
        if crash is not None:
            # The engine exits before it is ready: reported, and nothing is left.
            container.log_lines.extend(crash.log_lines)
            self._exit(container, crash.exit_code)
            del self._containers[instance_id]
            tail = "\n".join(container.log_lines[-20:])
            message = f"engine exited with code {crash.exit_code} before it was ready"
            await report(
                self._update(
                    container,
                    ERROR,
                    f"{message}; last log lines:\n{tail}",
                    exit_code=crash.exit_code,
                )
            )
            return
        await report(self._update(container, RUNNING))
        self._record("deployed", spec.deployment_id, instance_id)

    async def stop(
        self, instance_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        container = self._containers.get(instance_id)
        self._record("stop", container.deployment_id if container else instance_id, instance_id)
        if container is None:
            await report(StatusUpdate(instance_id, STOPPED))
            return
        if cluster_id and container.cluster_id and container.cluster_id != cluster_id:
            message = f"refused: container {container.name} belongs to LMStack cluster "
            await report(self._update(container, ERROR, message + container.cluster_id))
            return
        await report(self._update(container, STOPPING))
        gate = self._stop_gates.pop(instance_id, None)
        if gate is not None:
            await gate.wait()
        if container.state == RUNNING:
            self._exit(container, 0)
        if remove:
            del self._containers[instance_id]
        container.changed()
        await report(self._update(container, STOPPED))
        self._record("stopped", container.deployment_id, instance_id)

    async def logs(self, instance_id: str, lines: int) -> str:
        container = self._containers.get(instance_id)
        if container is None:
            raise ContainerError(f"no container for instance {instance_id}")
        return "\n".join(container.log_lines[-lines:] if lines > 0 else container.log_lines)

    async def follow_logs(self, instance_id: str, tail: int) -> AsyncIterator[str]:
        container = self._containers.get(instance_id)
        if container is None:
            raise ContainerError(f"no container for instance {instance_id}")
        sent = max(0, len(container.log_lines) - tail)
        while True:
            if sent < len(container.log_lines):
                lines, sent = container.log_lines[sent:], len(container.log_lines)
                yield "".join(line + "\n" for line in lines)
                continue
            current = self._containers.get(instance_id)
            if current is not container or container.state != RUNNING:
                return
            waiter = asyncio.Event()
            container.waiters.add(waiter)
            try:
                await waiter.wait()
            finally:
                container.waiters.discard(waiter)

    async def probe(self, instance_id: str) -> Probe:
        container = self._containers.get(instance_id)
        if container is None:
            return Probe(state="")
        return Probe(
            state=container.state,
            container_id=container.container_id,
            exit_code=container.exit_code,
            healthy=container.state == RUNNING and container.healthy,
        )

    async def close(self) -> None:
        """Nothing to release; present so callers treat every runtime alike."""

    # -- test hooks ----------------------------------------------------------------

    def exit_container(self, key: str, exit_code: int, *log_lines: str) -> None:
        """Make the instance's container exit, as a crashing engine would."""
        container = self._containers[self.instance_of(key)]
        container.log_lines.extend(log_lines)
        self._exit(container, exit_code)

    def set_healthy(self, key: str, healthy: bool) -> None:
        """Make the running engine answer its health checks (or stop answering)."""
        self._containers[self.instance_of(key)].healthy = healthy

    def crash_next_deploy(self, key: str, exit_code: int, *log_lines: str, times: int = 1) -> None:
        """The next ``times`` deploys of ``key`` start an engine that exits before
        it is ready."""
        self._crashes[key] = _Crash(exit_code, log_lines, times)

    def followers(self, key: str) -> int:
        """How many ``follow_logs`` wait on the instance's container now."""
        container = self._containers.get(self.instance_of(key))
        return 0 if container is None else len(container.waiters)

    def append_log(self, key: str, *lines: str) -> None:
        """Write ``lines`` to the instance's container log, as its engine would."""
        container = self._containers[self.instance_of(key)]
        container.log_lines.extend(lines)
        container.changed()

    def gate(self, key: str) -> asyncio.Event:
        """Hold the next deploy of ``key`` after ``pending``; set to release."""
        event = asyncio.Event()
        self._gates[key] = event
        return event

    def gate_stop(self, instance_id: str) -> asyncio.Event:
        """Hold the next stop of the instance after ``stopping``; set to release."""
        event = asyncio.Event()
        self._stop_gates[instance_id] = event
        return event

    def fail_next_deploy(self, key: str, message: str) -> None:
        self._failures[key] = message

    def plant(self, spec: DeploySpec, *, legacy: bool = False) -> ContainerState:
        """A running container of ``spec`` (labelled ``spec.cluster_id``), made
        without a deploy, as another controller's agent on this host made it;
        ``legacy``: as the agent before instances made it (no instance label, named
        ``lmstack-<name>``, that agent's spec hash)."""
        if legacy:
            container = self._create(spec, legacy_spec_hash(spec), legacy=True)
        else:
            container = self._create(spec, spec_hash(spec))
        container.state = RUNNING
        container.started_at = _now()
        return container.snapshot()

    def instance_of(self, key: str) -> str:
        """``key`` if it is an instance here, else the first instance of the
        deployment ``key`` (``key`` itself when it has none)."""
        if key in self._containers:
            return key
        for instance_id, container in self._containers.items():
            if container.deployment_id == key:
                return instance_id
        return key

    def deploys(self, instance_id: str) -> int:
        """How many deploys of the instance reached ``running`` (restarts included)."""
        return self.instance_events.count(("deployed", instance_id))

    # -- internals -----------------------------------------------------------------

    def _record(self, kind: str, deployment_id: str, instance_id: str) -> None:
        self.events.append((kind, deployment_id))
        self.instance_events.append((kind, instance_id))

    @staticmethod
    def _take(pending: dict[str, _T], spec: DeploySpec) -> _T | None:
        """The hook set for the spec's instance, else for its deployment (once)."""
        for key in (spec.instance, spec.deployment_id):
            if key in pending:
                return pending.pop(key)
        return None

    def _create(self, spec: DeploySpec, digest: str, *, legacy: bool = False) -> _Container:
        suffix = "" if legacy else f"-{spec.instance[:8]}"
        container = _Container(
            deployment_id=spec.deployment_id,
            instance_label="" if legacy else spec.instance,
            container_id=secrets.token_hex(32),
            name=f"lmstack-{spec.name}{suffix}",
            image=spec.image,
            host_port=spec.host_port,
            spec_hash=digest,
            restarts=spec.restarts,
            cluster_id=spec.cluster_id,
            worker_id=spec.worker_id,
        )
        # Replaces any container of another spec, like DockerRuntime does.
        replaced = self._containers.get(spec.instance)
        self._containers[spec.instance] = container
        if replaced is not None:
            replaced.changed()
        return container

    @staticmethod
    def _exit(container: _Container, exit_code: int) -> None:
        container.state = "exited"
        container.exit_code = exit_code
        container.changed()

    @staticmethod
    def _update(
        container: _Container,
        status: DeploymentStatus,
        message: str = "",
        *,
        restarts: int | None = None,
        exit_code: int | None = None,
    ) -> StatusUpdate:
        return StatusUpdate(
            container.instance_id,
            status,
            message,
            container_id=container.container_id,
            port=container.host_port,
            exit_code=exit_code,
            deployment_id=container.deployment_id,
            restarts=container.restarts if restarts is None else restarts,
            started_at=container.started_at,
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
