"""``/api/deployments``: list, get, create, change (scale, roll), stop, start,
delete, logs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import RowMapping

from controller import appkeys
from controller.deployments import DeploymentView
from controller.http import Endpoint, json_response, parse_body, parse_query, path_id
from controller.schemas import (
    DeploymentCreate,
    DeploymentCreated,
    DeploymentList,
    DeploymentListQuery,
    DeploymentOut,
    DeploymentPatch,
    LogsQuery,
    LogsResponse,
)
from controller.store import Deployment, Instance, aggregate
from controller.store.timeutil import iso_z
from shared.status import DeploymentStatus

# Fields computed from the instances, not columns of the deployment row.
_COMPUTED = {"ready_replicas", "instances"}
# The listing reads plain columns, not ORM objects: it is the hottest read path.
_LIST_COLUMNS = [
    getattr(Deployment, name) for name in DeploymentOut.model_fields if name not in _COMPUTED
]


def instance_out(instance: Instance, worker_name: str | None) -> dict[str, Any]:
    return {
        "id": instance.id,
        "worker_id": instance.worker_id,
        "worker_name": worker_name,
        "gpu_indices": list(instance.gpu_indices or []),
        "port": instance.port,
        "container_id": instance.container_id,
        "status": instance.status,
        "status_message": instance.status_message,
        "restarts": instance.restarts,
        "last_exit_code": instance.last_exit_code,
        "started_at": iso_z(instance.started_at) if instance.started_at else None,
        "spec_version": instance.spec_version,
        "draining": instance.draining,
        "created_at": iso_z(instance.created_at),
    }


def _with_instances(
    item: dict[str, Any], instances: list[tuple[Instance, str | None]]
) -> dict[str, Any]:
    item["instances"] = [instance_out(i, name) for i, name in instances]
    item["ready_replicas"] = aggregate.ready([i for i, _ in instances])
    return item


def deployment_out(view: DeploymentView) -> DeploymentOut:
    row = view.row
    item = {
        name: getattr(row, name) for name in DeploymentOut.model_fields if name not in _COMPUTED
    }
    return DeploymentOut.model_validate(_with_instances(item, view.instances))


async def list_deployments(request: web.Request) -> web.Response:
    query = parse_query(request, DeploymentListQuery)
    rows, instances, total = await request.app[appkeys.DEPLOYMENTS].page(query, _LIST_COLUMNS)
    # The hottest read path: rows from our own schema go straight to JSON in
    # the shape of ``DeploymentList`` (the OpenAPI tests check that shape).
    items = [_with_instances(_listed(row), instances.get(row["id"], [])) for row in rows]
    body = json.dumps({"items": items, "total": total}, separators=(",", ":"))
    return web.Response(body=body.encode(), content_type="application/json")


def _listed(row: RowMapping) -> dict[str, Any]:
    item = dict(row)
    item["created_at"] = iso_z(row["created_at"])
    item["updated_at"] = iso_z(row["updated_at"])
    return item


async def get_one(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    return json_response(deployment_out(await request.app[appkeys.DEPLOYMENTS].get(deployment_id)))


async def change(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    body = await parse_body(request, DeploymentPatch)
    view = await request.app[appkeys.DEPLOYMENTS].patch(deployment_id, body)
    return json_response(deployment_out(view))


async def stop(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    return json_response(deployment_out(await request.app[appkeys.DEPLOYMENTS].stop(deployment_id)))


async def start(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    view = await request.app[appkeys.DEPLOYMENTS].start(deployment_id)
    return json_response(deployment_out(view))


async def create(request: web.Request) -> web.Response:
    body = await parse_body(request, DeploymentCreate)
    row = await request.app[appkeys.DEPLOYMENTS].create(body)
    return json_response(
        DeploymentCreated(id=row.id, name=row.name, status=DeploymentStatus.PENDING), 201
    )


async def delete(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    await request.app[appkeys.DEPLOYMENTS].delete(deployment_id)
    return web.Response(status=204)


async def logs(request: web.Request) -> web.Response:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    query = parse_query(request, LogsQuery)
    text = await request.app[appkeys.DEPLOYMENTS].logs(deployment_id, query.lines)
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
        "PATCH",
        "/api/deployments/{deployment_id}",
        change,
        "Scale or update a deployment (a config, model or image change rolls)",
        "deployments",
        access="admin",
        body=DeploymentPatch,
        responses={200: DeploymentOut},
        # 409: the added replicas do not fit (explained); 503: pinned worker offline.
        errors=(404, 409, 422, 503),
    ),
    Endpoint(
        "POST",
        "/api/deployments/{deployment_id}/stop",
        stop,
        "Stop every instance (GPUs released); the deployment is kept",
        "deployments",
        access="admin",
        responses={200: DeploymentOut},
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/deployments/{deployment_id}/start",
        start,
        "Start a stopped deployment's replicas again",
        "deployments",
        access="admin",
        responses={200: DeploymentOut},
        errors=(404, 409, 503),
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
