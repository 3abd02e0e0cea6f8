"""The middleware that counts and times every HTTP request by route template."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from controller.http import Handler
from controller.metrics._registry import Metrics

UNMATCHED = "unmatched"
# nginx's convention for "the client closed the connection first".
CLIENT_CLOSED = 499


def route_template(request: web.Request) -> str:
    """``/api/deployments/{deployment_id}``, never the raw path; ``unmatched``
    for requests no route serves (404, 405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def http_middleware(metrics: Metrics) -> Middleware:
    """Outermost middleware: sees the final status, after error handling."""

    @web.middleware
    async def record_http(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            metrics.record_http(
                route_template(request), request.method, status, time.perf_counter() - started
            )

    return record_http
