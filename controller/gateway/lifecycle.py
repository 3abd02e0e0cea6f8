"""The gateway's lifecycle: its engine client, route table, in-flight counts,
limiter and proxy.

Start: the pooled keep-alive client to engines, the route table (invalidated
by every fleet change), the requests in flight per instance
(``Gateway.in_flight``, which draining waits on), the limiter of keys and
users (budgets read from the usage table, flushed first; windows on
``limits_clock``, restored from the journal's last minute) and the proxy,
reporting requests in flight to the metrics. Stop: the client's connections
are closed (after the HTTP server stopped taking requests: the application
tears the gateway down before the fleet and the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from controller.auth import Authenticator
from controller.fleet import Fleet
from controller.gateway.inflight import InFlight
from controller.gateway.proxy import Proxy, Timeouts
from controller.gateway.routes import RouteTable
from controller.gateway.state import Gateway
from controller.gateway.upstream import EngineClient
from controller.gateway.usage import UsageRecorder
from controller.limits import WINDOW, Limiter, UsageTable
from controller.metrics import Metrics
from controller.store import Database
from shared.settings import ControllerSettings


@contextlib.asynccontextmanager
async def serving_gateway(
    settings: ControllerSettings,
    db: Database,
    *,
    auth: Authenticator,
    fleet: Fleet,
    usage: UsageRecorder,
    metrics: Metrics,
    limits_clock: Callable[[], float] = time.time,
) -> AsyncIterator[Gateway]:
    # Engines are few and long-lived: keep connections to them open.
    client = EngineClient(connect_timeout=settings.gateway_connect_timeout)
    try:
        routes = RouteTable(db)
        fleet.subscribe(routes.invalidate)
        timeouts = Timeouts(
            total=settings.gateway_timeout, keepalive=settings.gateway_keepalive_seconds
        )
        limiter = Limiter(UsageTable(db, usage.flush), clock=limits_clock)
        # The last minute's requests, from the journal: rate windows outlive a restart.
        limiter.restore(await asyncio.to_thread(usage.recent, limits_clock() - WINDOW))
        in_flight = InFlight()
        proxy = Proxy(
            client, usage, timeouts, metrics, limiter=limiter, routes=routes,
            online=fleet.is_connected, instances=in_flight,
        )  # fmt: skip
        metrics.watch_gateway(proxy.in_flight_by_name)
        yield Gateway(routes, proxy, usage, auth, fleet, in_flight)
    finally:
        await client.close()
