"""Typed application state: the one place the top floor's keys are declared.

Only the top floor (``controller.app``, the HTTP handlers in ``controller.api``
and ``controller.web``) reads these; every lower package gets its dependencies
through constructors and imports nothing from here (``tests/test_layers.py``
checks it). A sub-application's private state is keyed where it lives
(``controller.gateway.state``, ``controller.web``).
"""

from __future__ import annotations

from aiohttp import web

from controller.auth import Authenticator
from controller.background import Background
from controller.deployments import DeploymentService
from controller.fleet import Fleet
from controller.metrics import Metrics
from controller.scheduler import Scheduler
from controller.store import Database
from shared.settings import ControllerSettings

SETTINGS = web.AppKey("settings", ControllerSettings)
METRICS = web.AppKey("metrics", Metrics)
BACKGROUND = web.AppKey("background", Background)
OPENAPI = web.AppKey("openapi", bytes)
# Set while the application runs (by ``controller.app``'s cleanup context).
DATABASE = web.AppKey("database", Database)
AUTH = web.AppKey("auth", Authenticator)
FLEET = web.AppKey("fleet", Fleet)
SCHEDULER = web.AppKey("scheduler", Scheduler)
DEPLOYMENTS = web.AppKey("deployments", DeploymentService)
GRPC_PORT = web.AppKey("grpc_port", int)
# The cluster id this database is (``controller.bootstrap.ensure_cluster``).
CLUSTER_ID = web.AppKey("cluster_id", str)
