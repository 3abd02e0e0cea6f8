"""Where a deployment runs on its worker: GPU indices and a host port.

Callers hold ``Fleet.placement_lock`` from choosing until the row is committed,
so two deployments can never be handed the same host port.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.schemas import DeploymentConfig
from controller.store import Deployment, Worker
from shared.errors import Conflict


def choose_gpus(worker: Worker, config: DeploymentConfig) -> list[int]:
    """The first ``tensor_parallel_size`` GPUs; none on a worker without GPUs."""
    count = int((worker.gpu_info or {}).get("count", 0))
    if count == 0:
        return []
    wanted = config.tensor_parallel_size or 1
    if wanted > count:
        raise Conflict(f"Worker '{worker.name}': tensor_parallel_size {wanted} > {count} GPUs")
    return list(range(wanted))


async def choose_port(session: AsyncSession, worker: Worker, low: int, high: int) -> int:
    used = set(
        await session.scalars(
            select(Deployment.port).where(
                Deployment.worker_id == worker.id, Deployment.port.is_not(None)
            )
        )
    )
    for port in range(low, high + 1):
        if port not in used:
            return port
    raise Conflict(f"Worker '{worker.name}' has no free host port in {low}-{high}")
