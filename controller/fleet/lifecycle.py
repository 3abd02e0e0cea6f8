"""The fleet's lifecycle: from "every worker offline" to serving agents, and back.

Start: every stored worker is marked offline (no agent is connected yet), the
gRPC server for agents starts listening, and the liveness-and-flush loop
starts under the controller's ``Background`` (its death is loud).

Stop, in this order, each step run even if an earlier one failed:
1. the loop ends between two passes (never inside a write);
2. every session is closed and its worker recorded offline, after a last
   heartbeat flush, while the store is still open;
3. the gRPC server stops (the streams' handlers finish within the grace) and
   is released while the event loop still runs, so grpc.aio's finaliser finds
   nothing left to schedule on a closed loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from controller.background import Background
from controller.fleet.hub import Fleet
from controller.fleet.server import FleetServer
from controller.metrics import Metrics
from controller.store import Database
from shared.settings import ControllerSettings


@dataclass(frozen=True)
class ServingFleet:
    """The live fleet and the port agents dial."""

    fleet: Fleet
    grpc_port: int


@contextlib.asynccontextmanager
async def serving_agents(
    settings: ControllerSettings,
    db: Database,
    metrics: Metrics,
    background: Background,
    join_token: str,
    *,
    cluster_id: str,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ServingFleet]:
    fleet = Fleet(
        db,
        heartbeat_interval=settings.heartbeat_interval,
        request_timeout=settings.agent_request_timeout,
        clock=clock,
        metrics=metrics,
        cluster_id=cluster_id,
    )
    metrics.watch_fleet(fleet)
    await fleet.mark_all_offline()
    server = FleetServer(settings, fleet, db, join_token)
    port = await server.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(server.stop)
        stack.push_async_callback(fleet.close_all)
        await stack.enter_async_context(
            background.run("fleet liveness", fleet.run(), stop=fleet.shut_down)
        )
        yield ServingFleet(fleet, port)
