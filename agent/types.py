"""Plain data the agent's parts pass to each other, and the Runtime interface.

The session (gRPC) talks to a ``Runtime``; ``DockerRuntime`` is the real one,
``MemoryRuntime`` (tests, fleet benchmark) keeps containers in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from shared.engines import EngineConfig
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
LABEL_DEPLOYMENT_NAME = "lmstack.deployment_name"
LABEL_SPEC_HASH = "lmstack.spec_hash"
LABEL_HOST_PORT = "lmstack.host_port"
LABEL_BACKEND = "lmstack.backend"
# The cluster id of the controller that had the container made (its Welcome's).
LABEL_CLUSTER_ID = "lmstack.cluster_id"


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


def spec_hash(spec: DeploySpec) -> str:
    """A short, stable digest of everything in the spec (key order does not
    matter): the same Deploy always yields the same hash, on every runtime.
    The config is hashed as its wire mapping, so the hash is what it was when
    the config travelled as a plain dict."""
    fields = {**asdict(spec), "config": spec.config.to_mapping()}
    del fields["cluster_id"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ContainerState:
    deployment_id: str
    container_id: str
    name: str
    state: str  # Docker's: created, running, exited, ...
    image: str
    host_port: int
    spec_hash: str
    exit_code: int = 0
    started_at: str = ""
    # Its ``lmstack.cluster_id`` label; empty when it has none.
    cluster_id: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    deployment_id: str
    status: DeploymentStatus
    message: str = ""
    container_id: str = ""
    port: int = 0
    exit_code: int | None = None


@dataclass(frozen=True)
class RuntimeInfo:
    available: bool
    version: str = ""
    error: str = ""


Reporter = Callable[[StatusUpdate], Awaitable[None]]


class Runtime(Protocol):
    """Runs engine containers. Every method is safe to call from the event loop."""

    async def info(self) -> RuntimeInfo: ...

    async def list_containers(self) -> list[ContainerState]:
        """Every LMStack-managed container on this host."""
        ...

    async def deploy(self, spec: DeploySpec, report: Reporter) -> None:
        """Bring ``spec`` to running, reporting each status transition.

        The container is labelled with ``spec.cluster_id`` when it is set. A
        container of another cluster holding the deployment's id or name is
        never replaced: the deploy fails with ``error`` saying so.

        Idempotent: a container of the same deployment and spec hash that runs
        already is left alone: not restarted, no ``starting`` report, and the
        last report is ``running`` with its container id (a runtime may report
        ``pending`` first while it looks). A container of the same
        deployment with another spec is replaced. Failures are reported as
        ``error`` (with exit code and last log lines when a container exited)
        and leave no container behind; they are not raised.
        """
        ...

    async def stop(
        self, deployment_id: str, remove: bool, report: Reporter, cluster_id: str = ""
    ) -> None:
        """Stop (and remove) the deployment's container: ``stopping`` → ``stopped``.

        With a ``cluster_id``, a container labelled with another cluster is
        refused: reported as ``error`` naming both clusters, and left running.
        An unlabelled container is stopped (the controller decided it is its own).
        """
        ...

    async def logs(self, deployment_id: str, lines: int) -> str:
        """The container's last ``lines`` lines (stdout and stderr)."""
        ...

    def follow_logs(self, deployment_id: str, tail: int) -> AsyncIterator[str]:
        """The container's last ``tail`` lines (none for 0), then its output as it
        is written, in chunks of whole or partial lines.

        Ends when the container stops or goes away; raises ``ContainerError`` when
        the deployment has no container here. Closing the iterator (or cancelling
        its consumer) stops following and releases everything it held.
        """
        ...
