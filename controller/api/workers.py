"""``/api/workers``: list, get (with system info and deployments), containers.

Both views show each GPU's reservation (fraction and deployments) from the
scheduler's ledger and the worker's free capacity; they never change it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.api.deployments import deployment_out
from controller.http import Endpoint, json_response, path_id
from controller.scheduler import Scheduler
from controller.schemas import (
    ContainerList,
    ContainerOut,
    EnginePorts,
    GpuInfo,
    WorkerDetail,
    WorkerList,
    WorkerOut,
)
from controller.store import Deployment, Instance, Worker
from shared.errors import NotFound


def _fields(row: Worker, scheduler: Scheduler, owners: dict[str, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "advertise_address": row.advertise_address,
        "agent_version": row.agent_version,
        "runtime_error": row.runtime_error,
        **_gpu_allocation(row, scheduler, owners),
        "engine_ports": _engine_ports(row, scheduler),
        "labels": dict(row.labels or {}),
        "last_heartbeat": row.last_heartbeat,
        "created_at": row.created_at,
    }


def _gpu_allocation(row: Worker, scheduler: Scheduler, owners: dict[str, str]) -> dict[str, Any]:
    """``gpu_info`` with each GPU's reservation (``deployments``: the ids of the
    deployments whose instances hold it; ``owners`` maps instance to deployment),
    and the worker's free capacity."""
    gpu_info = GpuInfo.model_validate(row.gpu_info or {})
    gpu_free, free_gpus = 0.0, 0
    for device in gpu_info.devices:
        usage = scheduler.gpu_usage(row.id, device.index)
        device.reserved = usage.reserved
        device.deployments = list(dict.fromkeys(owners.get(i, i) for i in usage.instances))
        gpu_free += max(0.0, 1.0 - usage.reserved)
        free_gpus += not usage.instances
    return {"gpu_info": gpu_info, "gpu_free": round(gpu_free, 4), "free_gpus": free_gpus}


def _engine_ports(row: Worker, scheduler: Scheduler) -> EnginePorts:
    if row.engine_port_min is not None and row.engine_port_max is not None:
        return EnginePorts(min=row.engine_port_min, max=row.engine_port_max, source="agent")
    return EnginePorts(min=scheduler.ports.low, max=scheduler.ports.high, source="controller")


def worker_out(row: Worker, scheduler: Scheduler, owners: dict[str, str]) -> WorkerOut:
    return WorkerOut(**_fields(row, scheduler, owners))


async def _owners(session: AsyncSession, worker_id: str | None = None) -> dict[str, str]:
    """Instance id → deployment id (of one worker's instances, or all)."""
    query = select(Instance.id, Instance.deployment_id)
    if worker_id is not None:
        query = query.where(Instance.worker_id == worker_id)
    return {iid: did for iid, did in await session.execute(query)}


async def list_workers(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].session() as session:
        rows = await session.scalars(select(Worker).order_by(Worker.created_at, Worker.id))
        scheduler = request.app[appkeys.SCHEDULER]
        owners = await _owners(session)
        items = [worker_out(row, scheduler, owners) for row in rows]
    return json_response(WorkerList(items=items))


async def get_worker(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id", "Worker")
    async with request.app[appkeys.DATABASE].session() as session:
        row = await session.get(Worker, worker_id)
        if row is None:
            raise NotFound(f"Worker '{worker_id}' not found")
        owners = await _owners(session, worker_id)
        aggregated = await session.scalars(
            select(Deployment.id).where(Deployment.worker_id == worker_id)
        )
        deployment_ids = sorted({*owners.values(), *aggregated})
    views = await request.app[appkeys.DEPLOYMENTS].views(deployment_ids)
    detail = WorkerDetail(
        **_fields(row, request.app[appkeys.SCHEDULER], owners),
        system_info=row.system_info or {},
        deployments=[deployment_out(v) for v in views],
    )
    return json_response(detail)


async def containers(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id", "Worker")
    async with request.app[appkeys.DATABASE].session() as session:
        if await session.get(Worker, worker_id) is None:
            raise NotFound(f"Worker '{worker_id}' not found")
    found = await request.app[appkeys.FLEET].list_containers(worker_id)
    items = [ContainerOut.model_validate(c) for c in found]
    return json_response(ContainerList(containers=items))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/workers",
        list_workers,
        "List workers",
        "workers",
        responses={200: WorkerList},
    ),
    Endpoint(
        "GET",
        "/api/workers/{worker_id}",
        get_worker,
        "Get a worker",
        "workers",
        responses={200: WorkerDetail},
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/workers/{worker_id}/containers",
        containers,
        "The worker's LMStack containers, live from its agent",
        "workers",
        responses={200: ContainerList},
        errors=(404, 503, 504),
    ),
]
