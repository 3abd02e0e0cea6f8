"""``GET /health``: liveness, no auth."""

from __future__ import annotations

from aiohttp import web

from controller.http import Endpoint, json_response
from controller.schemas import HealthResponse

_HEALTHY = json_response(HealthResponse()).body


async def health(request: web.Request) -> web.Response:
    return web.Response(body=_HEALTHY, content_type="application/json")


ENDPOINTS = [
    Endpoint(
        "GET",
        "/health",
        health,
        "Health check",
        "health",
        access="public",
        responses={200: HealthResponse},
    ),
]
