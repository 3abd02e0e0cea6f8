"""Plain data the agent's parts pass to each other, and the Runtime interface.

The session (gRPC) talks to a ``Runtime``; ``DockerRuntime`` is the real one,
``MemoryRuntime`` (tests, fleet benchmark) keeps containers in memory.

Keying: everything is keyed by *instance id* (one instance = one container; a
deployment has one or more). A ``DeploySpec`` without one is the instance whose id
is its deployment's id (``DeploySpec.instance``; what protocol 1 meant), and a container
without the ``lmstack.instance_id`` label (made before instances) is that instance
of its ``lmstack.deployment_id``.

``spec_hash`` is the identity of what a container runs: equal hashes mean the
container can be adopted as is. It covers neither the instance id, the restart
count nor the cluster id, and hashes the config's ``container_mapping()`` (the
serving keys change how LMStack serves an engine, not its container), so for a
config without serving keys it is the hash the agent of protocol 1 labelled its
containers with: an upgrade adopts them without a restart. ``legacy_spec_hash``
is that older agent's hash for any config (it covered the admission keys too).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from shared.engines import SERVING_KEYS, EngineConfig
from shared.status import DeploymentStatus

# Short names for the deployment statuses the agent reports (``shared.status``).
PENDING = DeploymentStatus.PENDING
DOWNLOADING = DeploymentStatus.DOWNLOADING
STARTING = DeploymentStatus.STARTING
RUNNING = DeploymentStatus.RUNNING
STOPPING = DeploymentStatus.STOPPING
STOPPED = DeploymentStatus.STOPPED
ERROR = DeploymentStatus.ERROR

LABEL_MANAGED = "lmstack.managed"
LABEL_DEPLOYMENT_ID = "lmstack.deployment_id"
# The instance the container is; absent on containers made before instances.
LABEL_INSTANCE_ID = "lmstack.instance_id"
LABEL_DEPLOYMENT_NAME = "lmstack.deployment_name"
LABEL_SPEC_HASH = "lmstack.spec_hash"
LABEL_HOST_PORT = "lmstack.host_port"
LABEL_BACKEND = "lmstack.backend"
# The cluster id of the controller that had the container made (its Welcome's).
LABEL_CLUSTER_ID = "lmstack.cluster_id"
# Restarts of the instance made before this container (the agent's restart policy).
LABEL_RESTARTS = "lmstack.restarts"
# The worker whose agent made the container: agents sharing one host (and one
# Docker engine) each see only their own, and the unlabelled ones made before.
LABEL_WORKER_ID = "lmstack.worker_id"

# Serving keys the agent of protocol 1 did not know (so never hashed).
_KEYS_AFTER_PROTOCOL_1 = SERVING_KEYS - {"max_parallel", "max_queued", "queue_timeout"}
# DeploySpec fields that say who runs the container or how often it ran, not what runs.
_NOT_HASHED = ("instance_id", "restarts", "cluster_id", "worker_id")


@dataclass(frozen=True)
class DeploySpec:
    """What the controller asked to run (the proto ``Deploy`` as Python, its
    ``config_json`` typed)."""

    deployment_id: str
    name: str
    backend: str
    image: str
    model: str
    config: EngineConfig
    host_port: int
    gpu_indices: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # Whose container it is (the controller's cluster id; empty: unknown). Not
    # part of ``spec_hash``: who asked does not change what runs, and containers
    # made before clusters were labelled are still adopted.
    cluster_id: str = ""
    # The instance this container is, as the Deploy said; read ``instance``.
    instance_id: str = ""
    # Restarts made of this instance before this container (not hashed).
    restarts: int = 0
    # The worker the agent runs as (its Welcome's; empty: unknown). Not hashed.
    worker_id: str = ""

    @property
    def instance(self) -> str:
        """The instance id in effect: ``instance_id``, else (a Deploy of protocol 1,
        or a spec made without one) the deployment's id."""
        return self.instance_id or self.deployment_id

    def status_update(
        self, status: DeploymentStatus, message: str = "", **fields: Any
    ) -> StatusUpdate:
        """A report about this spec's instance (its ids, port and restarts filled in)."""
        values: dict[str, Any] = {"port": self.host_port, "restarts": self.restarts, **fields}
        return StatusUpdate(
            self.instance, status, message, deployment_id=self.deployment_id, **values
        )


def spec_hash(spec: DeploySpec) -> str:
    """A short, stable digest of what the spec's container runs (key order does
    not matter): the same Deploy always yields the same hash, on every runtime.
    See the module docstring for what it leaves out."""
    return _digest(spec, spec.config.container_mapping())


def legacy_spec_hash(spec: DeploySpec) -> str:
    """The hash the agent of protocol 1 labelled this spec's container with: the
    config's whole wire mapping as that agent knew it (admission keys included)."""
    config = {k: v for k, v in spec.config.to_mapping().items() if k not in _KEYS_AFTER_PROTOCOL_1}
    return _digest(spec, config)


def _digest(spec: DeploySpec, config: Mapping[str, Any]) -> str:
    fields = {**asdict(spec), "config": dict(config)}
    for name in _NOT_HASHED:
        del fields[name]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ContainerState:
    """One managed container as listed (mirrors the proto ``ContainerInfo``)."""

    deployment_id: str
    container_id: str
    name: str
    state: str  # Docker's: created, running, exited, ...
    image: str
    host_port: int
    spec_hash: str
    exit_code: int = 0
    # When it last started (ISO-8601, ``Z``, whole seconds); empty if never.
    started_at: str = ""
    # Its ``lmstack.cluster_id`` label; empty when it has none.
    cluster_id: str = ""
    # Its ``lmstack.worker_id`` label; empty when it has none.
    worker_id: str = ""
    # Its ``lmstack.instance_id`` label, else (a container made before instances)
    # its deployment id.
    instance_id: str = ""
    # Restarts the agent made of the instance (its ``lmstack.restarts`` label, or
    # what the agent counted since).
    restarts: int = 0


@dataclass(frozen=True)
class StatusUpdate:
    """One status report of an instance (the proto ``DeploymentStatus``)."""

    instance_id: str
    status: DeploymentStatus
    message: str = ""
    container_id: str = ""
    port: int = 0
    exit_code: int | None = None
    # The instance's deployment; empty where the reporter does not know it (the
    # session fills it in from the command).
    deployment_id: str = ""
    restarts: int = 0
    # When the engine's container last started (ISO-8601, ``Z``); empty: unknown.
    started_at: str = ""
    # An ``error`` after which the agent restarts nothing more.
    final: bool = False


@dataclass(frozen=True)
class Probe:
    """What a look at an instance's container found (the restart policy's input)."""

    # Docker's state (running, exited, paused, ...); empty: there is no container.
    state: str
    container_id: str = ""
    exit_code: int = 0
    # Running, and its health endpoint answered 200 just now.
    healthy: bool = False
    # Killed by the kernel for memory.
    oom: bool = False


@dataclass(frozen=True)
class RuntimeInfo:
    available: bool
    version: str = ""
    error: str = ""


Reporter = Callable[[StatusUpdate], Awaitable[None]]


class Runtime(Protocol):
    """Runs engine containers, one per instance, keyed by instance id. Every
    method is safe to call from the event loop."""

    async def info(self) -> RuntimeInfo: ...

    async def list_containers(self) -> list[ContainerState]:
        """Every LMStack-managed container on this host."""
        ...

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        """Bring ``spec`` to running, reporting each status transition.

        The container is the instance's: found by its ``lmstack.instance_id``
        label (or, made before instances, its deployment id label equal to the
        instance id), never by name; a new one is named
        ``lmstack-<deployment name>-<first 8 characters of the instance id>`` and
        labelled with both ids, ``spec.restarts`` and ``spec.cluster_id`` (when set).
        A container of another cluster holding the instance or the name is never
        replaced: the deploy fails with ``error`` saying so.

        Idempotent: a container of the same instance and spec hash that runs
        already is left alone: not restarted, no ``starting`` report, and the
        last report is ``running`` with its container id (a runtime may report
        ``pending`` first while it looks). A container of the same instance with
        another spec, or not running, is replaced. Reports carry ``restarts``
        (the spec's, or an adopted container's label when higher) and, once the
        container runs, ``started_at``. Failures are reported as ``error`` (with
        exit code and last log lines when the engine exited) and leave no
        container behind; they are not raised.
        """
        ...

    async def stop(
        self, instance_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        """Stop (and remove) the instance's container: ``stopping`` → ``stopped``.

        With a ``cluster_id``, a container labelled with another cluster is
        refused: reported as ``error`` naming both clusters, and left running.
        An unlabelled container is stopped (the controller decided it is its own).
        """
        ...

    async def logs(self, instance_id: str, lines: int) -> str:
        """The container's last ``lines`` lines (stdout and stderr)."""
        ...

    def follow_logs(self, instance_id: str, tail: int) -> AsyncIterator[str]:
        """The container's last ``tail`` lines (none for 0), then its output as it
        is written, in chunks of whole or partial lines.

        Ends when the container stops or goes away; raises ``ContainerError`` when
        the instance has no container here. Closing the iterator (or cancelling
        its consumer) stops following and releases everything it held.
        """
        ...

    async def probe(self, instance_id: str) -> Probe:
        """The instance's container's state and, when it runs, one health check.

        No container is ``Probe(state="")``, not an error; raises an
        ``LMStackError`` only when the runtime cannot be asked.
        """
        ...
