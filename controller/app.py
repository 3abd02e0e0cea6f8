"""The controller's aiohttp application and its lifecycle.

The subsystems start in this order, each from the ones before it, and stop in
the reverse order; every stop step runs even when an earlier one failed
(one ``AsyncExitStack``):

1. store: the data directory, the schema (upgraded to the newest migration),
   the first admin user; closed last.
2. auth: the authenticator and its API-key ``last_used`` flusher (flushed once
   more on stop).
3. placement: the scheduler's ledger rebuilt from the store (before any agent
   can connect); the cluster id read from the store (made on the first start).
4. fleet (``controller.fleet.lifecycle``): every worker marked offline, the
   gRPC server for agents, the liveness-and-flush loop; on stop the loop ends,
   every session closes and its worker is recorded offline, then the gRPC
   server stops. The deployment service joins placement and fleet.
5. usage (``controller.gateway.usage``): the usage journal in
   ``<data_dir>/usage-journal`` replayed into the store, then its flusher; on
   stop a last flush, after the gateway is gone.
6. gateway (``controller.gateway.lifecycle``): the engine client, the route
   table (invalidated by fleet events), the limiter of keys and users (its
   rate windows restored from the journal's last minute), the proxy; on stop
   the engine connections close.

Before that unwinding, aiohttp's shutdown closes every dashboard WebSocket
(``controller.web``) and stops taking requests. Metrics live on the app from
its creation: the HTTP middleware records every request, the fleet and the
gateway report theirs. A background loop that dies is logged at once and
calls ``on_loop_death`` (``controller.background``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from aiohttp import web

from controller import appkeys
from controller.api import DOCUMENTED_ONLY, ENDPOINTS
from controller.api.metrics import document_metrics, metrics_endpoint
from controller.auth import IDENTITY, Authenticator, bearer_token, require_admin
from controller.background import Background
from controller.bootstrap import agent_token, ensure_admin, ensure_cluster, prepare_data_dir
from controller.deployments import DeploymentService
from controller.fleet import serving_agents
from controller.gateway import GATEWAY, PREFIX, create_gateway_app
from controller.gateway.lifecycle import serving_gateway
from controller.gateway.usage import recording_usage
from controller.http import Endpoint, Handler, error_middleware
from controller.metrics import Metrics, http_middleware
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


@contextlib.asynccontextmanager
async def _store(settings: ControllerSettings) -> AsyncIterator[Database]:
    prepare_data_dir(settings.data_dir)
    db = Database(settings.effective_database_url())
    try:
        await db.create_schema()
        await ensure_admin(db, settings)
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def _auth(settings: ControllerSettings, db: Database) -> AsyncIterator[Authenticator]:
    auth = Authenticator(
        db,
        token_ttl=timedelta(seconds=settings.token_ttl_seconds),
        bcrypt_rounds=settings.bcrypt_rounds,
    )
    async with flushing(
        auth.flush_last_used, settings.last_used_flush_seconds, "API key last_used"
    ):
        yield auth


async def _running(
    app: web.Application, clock: Callable[[], float], limits_clock: Callable[[], float]
) -> AsyncIterator[None]:
    """The one cleanup context: every subsystem, in the order stated above."""
    settings, metrics = app[appkeys.SETTINGS], app[appkeys.METRICS]
    async with contextlib.AsyncExitStack() as stack:
        enter = stack.enter_async_context
        db = app[appkeys.DATABASE] = await enter(_store(settings))
        auth = app[appkeys.AUTH] = await enter(_auth(settings, db))
        scheduler = app[appkeys.SCHEDULER] = await build_scheduler(settings, db)
        cluster_id = app[appkeys.CLUSTER_ID] = await ensure_cluster(db)
        serving = await enter(
            serving_agents(
                settings, db, metrics, app[appkeys.BACKGROUND], agent_token(settings),
                cluster_id=cluster_id, clock=clock,
            )
        )  # fmt: skip
        fleet = app[appkeys.FLEET] = serving.fleet
        app[appkeys.GRPC_PORT] = serving.grpc_port
        deployments = app[appkeys.DEPLOYMENTS] = DeploymentService(
            db, fleet, scheduler, reconcile_seconds=settings.reconcile_interval
        )
        usage = await enter(
            recording_usage(db, settings.usage_flush_seconds, settings.data_dir / "usage-journal")
        )
        app[GATEWAY] = await enter(
            serving_gateway(
                settings, db, auth=auth, fleet=fleet, usage=usage, metrics=metrics,
                limits_clock=limits_clock,
            )
        )  # fmt: skip
        deployments.use_in_flight(app[GATEWAY].in_flight)
        # Unwound in reverse: the loop ends first, then the drains in progress.
        stack.push_async_callback(deployments.close)
        await enter(
            app[appkeys.BACKGROUND].run("reconcile", deployments.run(), stop=deployments.shut_down)
        )
        yield


def create_app(
    settings: ControllerSettings,
    on_loop_death: Callable[[str], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    limits_clock: Callable[[], float] = time.time,
) -> web.Application:
    """The controller. ``on_loop_death`` is called (once per death) when a
    background loop dies; ``lmstack-controller`` stops the process then. ``clock``
    times the fleet's liveness (tests pass one that moves only when they say);
    ``limits_clock`` (unix seconds) the gateway's rate windows and budget periods."""
    metrics = Metrics()
    app = web.Application(
        middlewares=[http_middleware(metrics), error_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = metrics
    app[appkeys.BACKGROUND] = Background(on_loop_death)
    endpoints = [*ENDPOINTS, metrics_endpoint(settings.metrics_public)]
    doc = document_metrics(build_openapi([*endpoints, *DOCUMENTED_ONLY]))
    app[appkeys.OPENAPI] = json.dumps(doc).encode()
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, guarded(endpoint))
    app.add_subapp(PREFIX, create_gateway_app())
    setup_web(app)
    app.cleanup_ctx.append(functools.partial(_running, clock=clock, limits_clock=limits_clock))
    return app
