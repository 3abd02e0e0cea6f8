"""Blocking helpers over the engine's containers: call them through ``EngineClient.call``.

An instance's container is found by its ``lmstack.instance_id`` label, or, made
before instances, by its ``lmstack.deployment_id`` label equal to the instance id
(the migration made each deployment the instance of its own id); never by name.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import docker.errors
from docker.models.containers import Container

from agent.runtime._client import EngineClient
from agent.runtime._errors import explain
from agent.types import (
    LABEL_CLUSTER_ID,
    LABEL_DEPLOYMENT_ID,
    LABEL_HOST_PORT,
    LABEL_INSTANCE_ID,
    LABEL_MANAGED,
    LABEL_RESTARTS,
    LABEL_SPEC_HASH,
    LABEL_WORKER_ID,
    ContainerState,
)

# Docker's zero time, what StartedAt says for a container that never started.
_ZERO_TIME = "0001-01-01T00:00:00Z"


def managed(client: EngineClient) -> list[Container]:
    """Every LMStack-managed container on the engine."""
    found: list[Container] = client.sdk().containers.list(
        all=True, filters={"label": f"{LABEL_MANAGED}=true"}, ignore_removed=True
    )
    return found


def find(client: EngineClient, instance_id: str) -> Container | None:
    """The instance's managed container, if it has one (see the module docstring)."""
    labelled = _labelled(client, LABEL_INSTANCE_ID, instance_id)
    if labelled:
        return labelled[0]
    legacy = [
        c
        for c in _labelled(client, LABEL_DEPLOYMENT_ID, instance_id)
        if LABEL_INSTANCE_ID not in c.labels
    ]
    return legacy[0] if legacy else None


def _labelled(client: EngineClient, label: str, value: str) -> list[Container]:
    found = client.sdk().containers.list(
        all=True, filters={"label": f"{label}={value}"}, ignore_removed=True
    )
    return [c for c in found if c.labels.get(LABEL_MANAGED) == "true"]


def instance_of(container: Container) -> str:
    """The instance ``container`` is: its instance label, else its deployment's id."""
    labels = container.labels
    return str(labels.get(LABEL_INSTANCE_ID) or labels.get(LABEL_DEPLOYMENT_ID, ""))


def restarts_of(container: Container) -> int:
    """Its ``lmstack.restarts`` label (0 when it has none)."""
    try:
        return max(0, int(container.labels.get(LABEL_RESTARTS, "0")))
    except ValueError:
        return 0


def started_at(container: Container) -> str:
    """When it last started, as ISO-8601 ``Z`` in whole seconds; empty if never."""
    return iso_z(str(container.attrs.get("State", {}).get("StartedAt") or ""))


def iso_z(docker_time: str) -> str:
    """Docker's timestamp (RFC 3339, nanoseconds) as ``2024-01-01T12:00:00Z``;
    empty for Docker's zero time or anything that does not parse."""
    if not docker_time or docker_time == _ZERO_TIME or docker_time.startswith("0001-"):
        return ""
    try:
        parsed = datetime.fromisoformat(docker_time.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def remove(container: Container) -> None:
    """Remove ``container``; when this returns it is gone and its name is free."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # Two removals racing: the other one wins, which is what we wanted, but
        # the name stays taken until it has finished: wait for that.
        if "already in progress" not in explain(exc):
            raise
        with contextlib.suppress(docker.errors.NotFound):
            container.wait(condition="removed")


def tail(container: Container, lines: int | None) -> str:
    raw = container.logs(stdout=True, stderr=True, tail=lines if lines is not None else "all")
    return raw.decode("utf-8", errors="replace")


def container_state(container: Container) -> ContainerState:
    attrs = container.attrs
    state = attrs.get("State", {})
    labels = container.labels
    try:
        host_port = int(labels.get(LABEL_HOST_PORT, "0"))
    except ValueError:
        host_port = 0
    return ContainerState(
        deployment_id=labels.get(LABEL_DEPLOYMENT_ID, ""),
        container_id=str(container.id),
        name=str(container.name or ""),
        state=str(state.get("Status", container.status)),
        image=str(attrs.get("Config", {}).get("Image", "")),
        host_port=host_port,
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        exit_code=int(state.get("ExitCode", 0)),
        started_at=started_at(container),
        cluster_id=labels.get(LABEL_CLUSTER_ID, ""),
        worker_id=labels.get(LABEL_WORKER_ID, ""),
        instance_id=instance_of(container),
        restarts=restarts_of(container),
    )


def foreign(container: Container, cluster_id: str) -> str | None:
    """The other cluster ``container`` is labelled with, when it is not
    ``cluster_id``'s; ``None`` when it is ours, unlabelled, or no cluster is known."""
    label = str(container.labels.get(LABEL_CLUSTER_ID, ""))
    return label if cluster_id and label and label != cluster_id else None
