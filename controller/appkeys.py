"""Typed application state keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from controller.store import Database
from shared.settings import ControllerSettings

if TYPE_CHECKING:
    from controller.auth import Authenticator
    from controller.fleet import Fleet
    from controller.scheduler import Scheduler

SETTINGS = web.AppKey("settings", ControllerSettings)
DATABASE = web.AppKey("database", Database)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
FLEET: web.AppKey[Fleet] = web.AppKey("fleet")
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler")
OPENAPI = web.AppKey("openapi", bytes)
GRPC_PORT = web.AppKey("grpc_port", int)
