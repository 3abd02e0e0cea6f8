"""``/api/deployments``: list, get, create, delete, logs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import RowMapping, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.http import Endpoint, json_response, parse_body, parse_query, path_id
from controller.scheduler import Placement, Refusal, explain
from controller.schemas import (
    DeploymentCreate,
    DeploymentCreated,
    DeploymentList,
    DeploymentListQuery,
    DeploymentOut,
    LogsQuery,
    LogsResponse,
)
from controller.store import Deployment, Worker
from controller.store.models import new_id
from controller.store.timeutil import iso_z
from shared.errors import Conflict, NotFound, ServiceUnavailable


def deployment_out(row: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(row, from_attributes=True)


# The listing reads plain columns, not ORM objects: it is the hottest read path.
_LIST_COLUMNS = [getattr(Deployment, name) for name in DeploymentOut.model_fields]


async def get_deployment(session: AsyncSession, deployment_id: str) -> Deployment:
    row = await session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"Deployment '{deployment_id}' not found")
    return row


async def list_deployments(request: web.Request) -> web.Response:
    query = parse_query(request, DeploymentListQuery)
    conditions = []
    if query.status is not None:
        conditions.append(Deployment.status == query.status)
    if query.worker_id is not None:
        conditions.append(Deployment.worker_id == query.worker_id)
    async with request.app[appkeys.DATABASE].session() as session:
        total = await session.scalar(
            select(func.count()).select_from(Deployment).where(*conditions)
        )
        rows = await session.execute(
            select(*_LIST_COLUMNS)
            .where(*conditions)
            .order_by(Deployment.created_at, Deployment.id)
            .offset(query.skip)
            .limit(query.limit)
        )
        items = [_listed(row) for row in rows.mappings()]
    # The hottest read path: rows from our own schema go straight to JSON in
    # the shape of ``DeploymentList`` (the OpenAPI tests check that shape).
    body = json.dumps({"items": items, "total": total or 0}, separators=(",", ":"))
    return web.Response(body=body.encode(), content_type="application/json")


def _listed(row: RowMapping) -> dict[str, Any]:
    item = dict(row)
    item["created_at"] = iso_z(row["created_at"])
    item["updated_at"] = iso_z(row["updated_at"])
    return item


async def get_one(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    async with request.app[appkeys.DATABASE].session() as session:
        row = await get_deployment(session, deployment_id)
    return json_response(deployment_out(row))


async def create(request: web.Request) -> web.Response:
    body = await parse_body(request, DeploymentCreate)
    fleet = request.app[appkeys.FLEET]
    scheduler = request.app[appkeys.SCHEDULER]
    config = body.config.model_dump(exclude_none=True)
    # One placement decision at a time, from choosing until the row is committed
    # and booked: two creates can never take the same GPU capacity or port.
    async with fleet.placement_lock, request.app[appkeys.DATABASE].session() as session:
        if await session.scalar(select(Deployment.id).where(Deployment.name == body.name)):
            raise Conflict(f"A deployment named '{body.name}' already exists")
        placement = await _place(session, request, body, config)
        row = Deployment(
            id=new_id(),
            name=body.name,
            backend=body.backend,
            model=body.model,
            config=config,
            worker_id=placement.worker_id,
            gpu_indices=list(placement.gpu_indices),
            port=placement.port,
        )
        session.add(row)
        # Booked before the first await, released again if the commit fails.
        scheduler.book(row.id, placement)
        committed = False
        try:
            await session.commit()
            committed = True
        except IntegrityError:
            raise Conflict(f"A deployment named '{body.name}' already exists") from None
        finally:
            if not committed:
                scheduler.release(row.id)
    await fleet.deploy(row)
    return json_response(DeploymentCreated(id=row.id, name=row.name, status="pending"), 201)


async def _place(
    session: AsyncSession, request: web.Request, body: DeploymentCreate, config: dict[str, Any]
) -> Placement:
    """Where the new deployment goes: 404/503 for a named worker that is missing
    or offline, 409 naming every worker considered when nothing fits."""
    fleet = request.app[appkeys.FLEET]
    scheduler = request.app[appkeys.SCHEDULER]
    if body.worker_id is not None:
        worker = await session.get(Worker, body.worker_id)
        if worker is None:
            raise NotFound(f"Worker '{body.worker_id}' not found")
        if worker.status != "online" or not fleet.is_connected(worker.id):
            raise ServiceUnavailable(f"Worker '{worker.name}' is offline")
        result = scheduler.place_on(body.name, body.backend, config, fleet.session(worker.id))
        if isinstance(result, Refusal):
            raise explain(result)
        return result
    result = scheduler.place_anywhere(body.name, body.backend, config, fleet.live_sessions())
    if isinstance(result, Refusal):
        # Only a refusal reads the store, to name the workers that are away.
        online = {worker.id for worker in result.rejected}
        workers = await session.execute(select(Worker.id, Worker.name))
        raise explain(result, [name for worker_id, name in workers if worker_id not in online])
    return result


async def delete(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    fleet = request.app[appkeys.FLEET]
    async with request.app[appkeys.DATABASE].session() as session:
        row = await get_deployment(session, deployment_id)
        worker_id = row.worker_id
        await session.delete(row)
        await session.commit()
    # Released only once the row is gone, so a failed delete keeps its booking.
    async with fleet.placement_lock:
        request.app[appkeys.SCHEDULER].release(deployment_id)
    # An agent that is away gets the container removed when it reconnects.
    if worker_id is not None:
        await fleet.stop(worker_id, deployment_id)
    return web.Response(status=204)


async def logs(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    query = parse_query(request, LogsQuery)
    async with request.app[appkeys.DATABASE].session() as session:
        row = await get_deployment(session, deployment_id)
    if row.worker_id is None:
        raise ServiceUnavailable(f"Deployment '{row.name}' is not placed on a worker yet")
    text = await request.app[appkeys.FLEET].fetch_logs(row.worker_id, row.id, query.lines)
    return json_response(LogsResponse(logs=text))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/deployments",
        list_deployments,
        "List deployments",
        "deployments",
        query=DeploymentListQuery,
        responses={200: DeploymentList},
        errors=(422,),
    ),
    Endpoint(
        "POST",
        "/api/deployments",
        create,
        "Create a deployment",
        "deployments",
        access="admin",
        body=DeploymentCreate,
        responses={201: DeploymentCreated},
        # 404/503: the named worker is missing/offline; 409: nothing fits (explained).
        errors=(404, 409, 422, 503),
    ),
    Endpoint(
        "GET",
        "/api/deployments/{deployment_id}",
        get_one,
        "Get a deployment",
        "deployments",
        responses={200: DeploymentOut},
        errors=(404,),
    ),
    Endpoint(
        "DELETE",
        "/api/deployments/{deployment_id}",
        delete,
        "Delete a deployment",
        "deployments",
        access="admin",
        responses={204: None},
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/api/deployments/{deployment_id}/logs",
        logs,
        "Last lines of the engine's log",
        "deployments",
        query=LogsQuery,
        responses={200: LogsResponse},
        errors=(404, 422, 503, 504),
    ),
]
