"""The controller's aiohttp application and its lifecycle.

Start-up order (cleanup contexts, torn down in reverse):
1. store: data directory, database schema (upgraded to the newest migration),
   first admin user;
2. auth: the authenticator and its ``last_used`` flusher (flushed once more on stop);
3. fleet: every worker marked offline, the placement ledger rebuilt from the
   store, the gRPC server for agents, the liveness and heartbeat-flush loop.
   On stop the gRPC server is stopped first (streams end, workers go offline),
   then the loop, then a last flush.
4. gateway: the pooled HTTP client to engines, the routing table (invalidated
   by fleet events) and the usage flusher (flushed once more on stop).

On shutdown (before the cleanup contexts unwind) every dashboard WebSocket is
closed (``controller.web``).

Metrics (``GET /metrics``, ``controller.metrics``) live on the app from its
creation: the HTTP middleware records every request, the fleet and the gateway
record theirs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from controller import appkeys
from controller.api import DOCUMENTED_ONLY, ENDPOINTS
from controller.auth import IDENTITY, Authenticator, bearer_token, require_admin
from controller.bootstrap import agent_token, ensure_admin, prepare_data_dir
from controller.fleet import Fleet, FleetServer
from controller.gateway import GATEWAY, Gateway, create_gateway_app
from controller.gateway.proxy import Proxy, Timeouts
from controller.gateway.routes import RouteTable
from controller.gateway.upstream import EngineClient
from controller.gateway.usage import UsageRecorder
from controller.http import Endpoint, Handler, error_middleware
from controller.metrics import (
    METRICS,
    Metrics,
    document_metrics,
    http_middleware,
    metrics_endpoint,
)
from controller.openapi import build_openapi
from controller.scheduler import build_scheduler
from controller.store import Database, flushing
from controller.web import setup_web
from shared.settings import ControllerSettings

MAX_BODY_BYTES = 1024 * 1024


def guarded(endpoint: Endpoint) -> Handler:
    """The endpoint's handler behind its declared access rule."""
    if endpoint.access == "public":
        return endpoint.handler

    async def handler(request: web.Request) -> web.StreamResponse:
        identity = await request.app[appkeys.AUTH].resolve(bearer_token(request))
        if endpoint.access == "admin":
            require_admin(identity)
        request[IDENTITY] = identity
        return await endpoint.handler(request)

    return handler


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    prepare_data_dir(settings.data_dir)
    db = Database(settings.effective_database_url())
    try:
        await db.create_schema()
        await ensure_admin(db, settings)
        app[appkeys.DATABASE] = db
        yield
    finally:
        await db.close()


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    auth = Authenticator(
        app[appkeys.DATABASE],
        token_ttl=timedelta(seconds=settings.token_ttl_seconds),
        bcrypt_rounds=settings.bcrypt_rounds,
    )
    app[appkeys.AUTH] = auth
    interval = settings.last_used_flush_seconds
    async with flushing(auth.flush_last_used, interval, "API key last_used"):
        yield


async def _fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    db = app[appkeys.DATABASE]
    fleet = Fleet(
        db,
        heartbeat_interval=settings.heartbeat_interval,
        request_timeout=settings.agent_request_timeout,
        metrics=app[METRICS],
    )
    app[METRICS].watch_fleet(fleet)
    await fleet.mark_all_offline()
    app[appkeys.SCHEDULER] = await build_scheduler(settings, db)
    server = FleetServer(settings, fleet, db, agent_token(settings))
    app[appkeys.GRPC_PORT] = await server.start()
    app[appkeys.FLEET] = fleet
    loop = asyncio.create_task(fleet.run())
    try:
        yield
    finally:
        fleet.shut_down()
        await loop
        await fleet.close_all()
        await server.stop()


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    db = app[appkeys.DATABASE]
    # Engines are few and long-lived: keep connections to them open.
    client = EngineClient(connect_timeout=settings.gateway_connect_timeout)
    routes = RouteTable(db)
    app[appkeys.FLEET].subscribe(routes.invalidate)
    usage = UsageRecorder(db)
    timeouts = Timeouts(
        connect=settings.gateway_connect_timeout,
        total=settings.gateway_timeout,
        keepalive=settings.gateway_keepalive_seconds,
    )
    proxy = Proxy(client, usage, timeouts, app[METRICS])
    app[GATEWAY] = Gateway(routes, proxy, usage, app[appkeys.AUTH], app[appkeys.FLEET])
    app[METRICS].watch_gateway(proxy.in_flight_by_name)
    try:
        async with flushing(usage.flush, settings.usage_flush_seconds, "gateway usage"):
            yield
    finally:
        await client.close()


def create_app(settings: ControllerSettings) -> web.Application:
    metrics = Metrics()
    app = web.Application(
        middlewares=[http_middleware(metrics), error_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[appkeys.SETTINGS] = settings
    app[METRICS] = metrics
    endpoints = [*ENDPOINTS, metrics_endpoint(settings.metrics_public)]
    doc = document_metrics(build_openapi([*endpoints, *DOCUMENTED_ONLY]))
    app[appkeys.OPENAPI] = json.dumps(doc).encode()
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, guarded(endpoint))
    app.add_subapp("/v1", create_gateway_app())
    setup_web(app)
    app.cleanup_ctx.extend([_store_ctx, _auth_ctx, _fleet_ctx, _gateway_ctx])
    return app
