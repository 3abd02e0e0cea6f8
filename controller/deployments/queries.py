"""The deployment service's reads of deployments and instances (one session each)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.store import Deployment, Instance, Worker
from shared.errors import NotFound

# Each deployment's instances with their worker's name (None: not on a worker).
NamedInstances = dict[str, list[tuple[Instance, str | None]]]


async def get_deployment(session: AsyncSession, deployment_id: str) -> Deployment:
    row = await session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"Deployment '{deployment_id}' not found")
    return row


async def instance_rows(session: AsyncSession, deployment_id: str) -> list[Instance]:
    """The deployment's instances in creation order."""
    return list(
        await session.scalars(
            select(Instance)
            .where(Instance.deployment_id == deployment_id)
            .order_by(Instance.created_at, Instance.id)
        )
    )


async def named_instances(session: AsyncSession, deployment_ids: Sequence[str]) -> NamedInstances:
    """Each deployment's instances in creation order, with their worker's name."""
    if not deployment_ids:
        return {}
    rows = await session.execute(
        select(Instance, Worker.name)
        .outerjoin(Worker, Worker.id == Instance.worker_id)
        .where(Instance.deployment_id.in_(list(deployment_ids)))
        .order_by(Instance.created_at, Instance.id)
    )
    found: NamedInstances = {}
    for instance, worker_name in rows:
        found.setdefault(instance.deployment_id, []).append((instance, worker_name))
    return found


def per_worker(instances: Sequence[Instance]) -> dict[str, int]:
    """How many of ``instances`` each worker holds (placement's spread input)."""
    counts: dict[str, int] = {}
    for instance in instances:
        if instance.worker_id is not None:
            counts[instance.worker_id] = counts.get(instance.worker_id, 0) + 1
    return counts
