"""``/api/deployments``: list, get, create, delete, logs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import RowMapping

from controller import appkeys
from controller.http import Endpoint, json_response, parse_body, parse_query, path_id
from controller.schemas import (
    DeploymentCreate,
    DeploymentCreated,
    DeploymentList,
    DeploymentListQuery,
    DeploymentOut,
    LogsQuery,
    LogsResponse,
)
from controller.store import Deployment
from controller.store.timeutil import iso_z
from shared.status import DeploymentStatus


def deployment_out(row: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(row, from_attributes=True)


# The listing reads plain columns, not ORM objects: it is the hottest read path.
_LIST_COLUMNS = [getattr(Deployment, name) for name in DeploymentOut.model_fields]


async def list_deployments(request: web.Request) -> web.Response:
    query = parse_query(request, DeploymentListQuery)
    rows, total = await request.app[appkeys.DEPLOYMENTS].page(query, _LIST_COLUMNS)
    # The hottest read path: rows from our own schema go straight to JSON in
    # the shape of ``DeploymentList`` (the OpenAPI tests check that shape).
    items = [_listed(row) for row in rows]
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
