"""Blocking helpers over the engine's containers: call them through ``EngineClient.call``."""

from __future__ import annotations

import contextlib

import docker.errors
from docker.models.containers import Container

from agent.runtime._client import EngineClient
from agent.runtime._errors import explain
from agent.types import (
    LABEL_CLUSTER_ID,
    LABEL_DEPLOYMENT_ID,
    LABEL_HOST_PORT,
    LABEL_MANAGED,
    LABEL_SPEC_HASH,
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


def find(client: EngineClient, deployment_id: str) -> Container | None:
    """The deployment's managed container, if it has one."""
    found = client.sdk().containers.list(
        all=True,
        filters={"label": f"{LABEL_DEPLOYMENT_ID}={deployment_id}"},
        ignore_removed=True,
    )
    ours = [c for c in found if c.labels.get(LABEL_MANAGED) == "true"]
    return ours[0] if ours else None


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
    started_at = str(state.get("StartedAt") or "")
    return ContainerState(
        deployment_id=labels.get(LABEL_DEPLOYMENT_ID, ""),
        container_id=str(container.id),
        name=str(container.name or ""),
        state=str(state.get("Status", container.status)),
        image=str(attrs.get("Config", {}).get("Image", "")),
        host_port=host_port,
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        exit_code=int(state.get("ExitCode", 0)),
        started_at="" if started_at == _ZERO_TIME else started_at,
        cluster_id=labels.get(LABEL_CLUSTER_ID, ""),
    )


def foreign(container: Container, cluster_id: str) -> str | None:
    """The other cluster ``container`` is labelled with, when it is not
    ``cluster_id``'s; ``None`` when it is ours, unlabelled, or no cluster is known."""
    label = str(container.labels.get(LABEL_CLUSTER_ID, ""))
    return label if cluster_id and label and label != cluster_id else None
