"""The status vocabulary both daemons and the REST API speak, defined once.

Each is a ``StrEnum``: a member *is* its string value, so it compares equal to
the bare string, serialises to it in JSON and is stored as it in the database;
REST and gRPC output is the same as with plain strings.

Deployment lifecycle (DESIGN §3): ``pending`` → ``downloading`` (image pull) →
``starting`` (container up, engine not ready) → ``running`` (health check
passes) → ``stopping`` → ``stopped``; ``error`` from any step.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    """Where a deployment is in its lifecycle (reported by the agent)."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


class WorkerStatus(StrEnum):
    """Whether a worker's agent is connected and heartbeating."""

    ONLINE = "online"
    OFFLINE = "offline"


__all__ = ["DeploymentStatus", "WorkerStatus"]
