"""The gateway's long-lived parts, kept on the root app under one key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from controller.gateway.proxy import Proxy
from controller.gateway.routes import RouteTable
from controller.gateway.usage import UsageRecorder


@dataclass
class Gateway:
    routes: RouteTable
    proxy: Proxy
    usage: UsageRecorder


GATEWAY = web.AppKey("gateway", Gateway)
