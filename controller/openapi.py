"""Builds the OpenAPI 3.1 document from the endpoint declarations."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from controller.http import Endpoint
from controller.schemas import ErrorBody
from shared import __version__

REF = "#/components/schemas/{model}"
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Missing or invalid bearer token",
    403: "Not allowed for this account",
    404: "Not found",
    409: "Conflict",
    422: "Invalid input; `errors` names each offending field",
    429: "Refused by a limit; retry after `Retry-After` seconds",
    502: "The engine could not be reached or broke off",
    503: "Not available now (worker offline, deployment not running)",
    504: "Timed out waiting for the agent or the engine",
}


def build_openapi(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for ep in endpoints:
        if ep.body is not None:
            wanted.append((ep.body, "validation"))
        if ep.query is not None:
            wanted.append((ep.query, "validation"))
        wanted += [(m, "serialization") for m in ep.responses.values() if m is not None]
        if ep.error_model is not None:
            wanted.append((ep.error_model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(unique, ref_template=REF)
    schemas: dict[str, Any] = defs.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "LMStack API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (lmsk_...) or a token from /api/auth/login",
                }
            },
        },
    }


def _operation(
    ep: Endpoint,
    refs: Mapping[tuple[Any, Literal["validation", "serialization"]], Any],
    schemas: dict[str, Any],
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": ep.summary,
        "tags": [ep.tag],
        "operationId": f"{ep.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', ep.path.lower())}".rstrip(
            "_"
        ),
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", ep.path)
    ]
    if ep.query is not None:
        query_schema = schemas[refs[(ep.query, "validation")]["$ref"].rsplit("/", 1)[1]]
        for name, prop in query_schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(ep.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status, model in ep.responses.items():
        entry: dict[str, Any] = {"description": _REASONS.get(status, "OK")}
        if model is not None:
            entry["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(status)] = entry
    errors = set(ep.errors)
    if ep.access != "public":
        errors.add(401)
        op["security"] = [{"bearerAuth": []}]
    if ep.access == "admin":
        errors.add(403)
    if ep.body is not None or ep.query is not None:
        errors.add(422)
    error_schema = refs[(ep.error_model or ErrorBody, "serialization")]
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": error_schema}},
        }
    op["responses"] = responses
    return op
