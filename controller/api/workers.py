"""``/api/workers``: list, get (with system info and deployments), containers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from controller import appkeys
from controller.api.deployments import deployment_out
from controller.http import Endpoint, json_response, path_id
from controller.schemas import (
    ContainerList,
    ContainerOut,
    GpuInfo,
    WorkerDetail,
    WorkerList,
    WorkerOut,
)
from controller.store import Deployment, Worker
from shared.errors import NotFound


def _fields(row: Worker) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "advertise_address": row.advertise_address,
        "agent_version": row.agent_version,
        "runtime_error": row.runtime_error,
        "gpu_info": GpuInfo.model_validate(row.gpu_info or {}),
        "last_heartbeat": row.last_heartbeat,
        "created_at": row.created_at,
    }


def worker_out(row: Worker) -> WorkerOut:
    return WorkerOut(**_fields(row))


async def list_workers(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].session() as session:
        rows = await session.scalars(select(Worker).order_by(Worker.created_at, Worker.id))
        items = [worker_out(row) for row in rows]
    return json_response(WorkerList(items=items))


async def get_worker(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id", "Worker")
    async with request.app[appkeys.DATABASE].session() as session:
        row = await session.get(Worker, worker_id)
        if row is None:
            raise NotFound(f"Worker '{worker_id}' not found")
        deployments = await session.scalars(
            select(Deployment)
            .where(Deployment.worker_id == worker_id)
            .order_by(Deployment.created_at, Deployment.id)
        )
        detail = WorkerDetail(
            **_fields(row),
            system_info=row.system_info or {},
            deployments=[deployment_out(d) for d in deployments],
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
