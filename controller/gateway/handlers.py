"""``/v1``: OpenAI-compatible routes. ``model`` is the deployment name.

``ENDPOINTS`` is the one declaration of these routes: ``create_gateway_app``
routes from it and the OpenAPI document describes it (with OpenAI-shaped
errors), so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from controller.auth import Identity, bearer_token
from controller.gateway.admission import REFUSAL_CODE as QUEUE_REFUSAL
from controller.gateway.errors import GatewayError, model_not_found, openai_errors
from controller.gateway.routes import Route, usable
from controller.gateway.state import GATEWAY, Gateway
from controller.http import Endpoint
from controller.schemas import OpenAIError, OpenAIRequest, OpenAIResponse
from shared.errors import Unauthorized

MAX_BODY_BYTES = 32 * 1024 * 1024
# Where the sub-application is mounted; ``ENDPOINTS`` carry it in their paths.
PREFIX = "/v1"


async def authenticate(gateway: Gateway, request: web.Request) -> Identity:
    try:
        return await gateway.auth.resolve(bearer_token(request))
    except Unauthorized as exc:
        raise GatewayError(401, "invalid_api_key", exc.detail) from None


def may_use(identity: Identity, name: str) -> bool:
    allowed = identity.allowed_deployments
    return allowed is None or name in allowed


async def list_models(request: web.Request) -> web.Response:
    gateway = request.config_dict[GATEWAY]
    identity = await authenticate(gateway, request)
    online = gateway.fleet.is_connected
    routes = await gateway.routes.running()
    data = [
        {"id": r.name, "object": "model", "created": r.created, "owned_by": "lmstack"}
        for r in routes
        if may_use(identity, r.name) and r.usable(online)
    ]
    headers = gateway.proxy.rate_headers(identity)
    return web.json_response({"object": "list", "data": data}, headers=headers)


async def _read_json(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "invalid_json", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_request", "The request body must be a JSON object")
    return raw, body


async def _route_for(gateway: Gateway, identity: Identity, model: Any) -> Route:
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "invalid_request", "'model' is required (a deployment name)")
    route = await gateway.routes.lookup(model)
    if route is None or not may_use(identity, model):
        raise model_not_found(model)
    usable(route, gateway.fleet.is_connected)  # refused before any limit counts it
    return route


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    """Chat completions, completions and embeddings: forwarded on the same path."""
    gateway = request.config_dict[GATEWAY]
    identity = await authenticate(gateway, request)
    proxy = gateway.proxy
    try:
        raw, body = await _read_json(request)
        route = await _route_for(gateway, identity, body.get("model"))
    except GatewayError as exc:
        if identity.limited:  # every answer under a limit says where it stands
            exc.headers = proxy.rate_headers(identity)
        raise
    unchanged: bytes | None = raw
    if body["model"] != route.served_model:
        body["model"] = route.served_model
        unchanged = None
    admitted = await proxy.admit(identity) if identity.limited else None
    try:
        # The deployment's gate comes after the key's and user's limits.
        async with gateway.admission.admit(route, request):
            return await proxy.forward(
                request, identity, route, body, raw=unchanged, admitted=admitted
            )
    except GatewayError as exc:
        if exc.code == QUEUE_REFUSAL:
            proxy.refused(identity, exc.code)
        if admitted is not None:
            exc.headers = {**admitted.headers, **(exc.headers or {})}
        raise
    finally:
        if admitted is not None:
            proxy.release(admitted)  # in flight never leaks: errors, clients gone


_ERRORS = (400, 401, 404, 429, 502, 503, 504)

ENDPOINTS = [
    Endpoint(
        "GET", f"{PREFIX}/models", list_models, "Running models this key may call", "gateway",
        responses={200: OpenAIResponse}, error_model=OpenAIError,
    ),
    *[
        Endpoint(
            "POST", f"{PREFIX}/{path}", proxy_handler, summary, "gateway", body=OpenAIRequest,
            responses={200: OpenAIResponse}, errors=_ERRORS, error_model=OpenAIError,
        )
        for path, summary in (
            ("chat/completions", "Chat completion (JSON or SSE stream)"),
            ("completions", "Text completion (JSON or SSE stream)"),
            ("embeddings", "Embeddings"),
        )
    ],
]  # fmt: skip


def create_gateway_app() -> web.Application:
    """The sub-application to mount at ``PREFIX``; it authenticates each request itself."""
    app = web.Application(middlewares=[openai_errors], client_max_size=MAX_BODY_BYTES)
    for endpoint in ENDPOINTS:
        path = endpoint.path.removeprefix(PREFIX)
        if endpoint.method == "GET":
            app.router.add_get(path, endpoint.handler)  # and HEAD, as aiohttp does for GET
        else:
            app.router.add_route(endpoint.method, path, endpoint.handler)
    return app
