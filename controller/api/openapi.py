"""``GET /api/openapi.json``: the OpenAPI document, built from the endpoint table."""

from __future__ import annotations

from aiohttp import web

from controller import appkeys
from controller.http import Endpoint


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[appkeys.OPENAPI], content_type="application/json")


ENDPOINTS = [
    Endpoint(
        "GET", "/api/openapi.json", openapi, "This OpenAPI document", "meta", responses={200: None}
    ),
]
