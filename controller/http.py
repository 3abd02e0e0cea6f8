"""HTTP plumbing shared by the REST handlers: endpoint declarations, body and
query parsing into pydantic models, JSON responses, and the error middleware.

Each handler is declared once as an ``Endpoint``; the same declaration wires
the aiohttp route and describes it in the OpenAPI document, so the two cannot
drift apart.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import APIError, NotFound, ValidationFailed

log = logging.getLogger("lmstack.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Literal["public", "user", "admin"]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    access: Access = "user"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # Success status → response model (None: no body).
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    # Error statuses this endpoint can answer besides the generic ones.
    errors: Sequence[int] = ()
    # The shape of its error bodies (None: ``ErrorBody``).
    error_model: type[BaseModel] | None = None


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def error_body(status: int, detail: str, errors: list[dict[str, object]] | None = None) -> bytes:
    payload: dict[str, object] = {"detail": detail, "status_code": status}
    if errors:
        payload["errors"] = errors
    return json.dumps(payload).encode()


def _field_errors(exc: ValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


def _summarise(where: str, errors: list[dict[str, object]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"]) or where  # type: ignore[attr-defined]
        parts.append(f"{loc}: {err['msg']}")
    return f"Invalid {where}: " + "; ".join(parts)


def validate(model: type[M], data: object, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = _field_errors(exc)
        if where == "query":
            for err in errors:
                err["loc"] = ["query", *err["loc"]]  # type: ignore[misc]
        raise ValidationFailed(_summarise(where, errors), errors) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            f"Request body is not valid JSON: {exc}",
            [{"loc": ["body"], "msg": "invalid JSON", "type": "json_invalid"}],
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            "Request body must be a JSON object",
            [{"loc": ["body"], "msg": "must be a JSON object", "type": "dict_type"}],
        )
    return validate(model, data, "request body")


def parse_query(request: web.Request, model: type[M]) -> M:
    known = set(model.model_fields)
    data = {k: v for k, v in request.query.items() if k in known}
    return validate(model, data, "query")


def path_id(request: web.Request, name: str, what: str) -> str:
    """A UUID path parameter; anything that is not a UUID cannot exist → 404."""
    raw = request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"{what} '{raw}' not found") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; nothing else (least of all a traceback) does."""
    try:
        return await handler(request)
    except APIError as exc:
        errors = exc.errors if isinstance(exc, ValidationFailed) else None
        return _error(exc.status_code, exc.detail, errors)
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        return _error(exc.status_code, exc.reason, None, exc.headers.get("Allow"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "Internal server error", None)


def _error(
    status: int, detail: str, errors: list[dict[str, object]] | None, allow: str | None = None
) -> web.Response:
    headers = {"Allow": allow} if allow else None
    return web.Response(
        body=error_body(status, detail, errors),
        status=status,
        content_type="application/json",
        headers=headers,
    )
