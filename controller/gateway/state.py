"""The gateway's long-lived parts, kept on the root app under one key."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from controller.auth import Authenticator
from controller.fleet import Fleet
from controller.gateway.admission import DeploymentGates
from controller.gateway.inflight import InFlight
from controller.gateway.proxy import Proxy
from controller.gateway.routes import RouteTable
from controller.gateway.usage import UsageRecorder


@dataclass
class Gateway:
    """What a ``/v1`` request needs, behind one app-state lookup."""

    routes: RouteTable
    proxy: Proxy
    usage: UsageRecorder
    auth: Authenticator
    fleet: Fleet
    # Requests in flight per instance (what draining waits on: ``InFlight.idle``).
    in_flight: InFlight
    # Per-deployment max_parallel gates (state only: nothing to start or stop).
    admission: DeploymentGates = field(default_factory=DeploymentGates)


GATEWAY = web.AppKey("gateway", Gateway)
