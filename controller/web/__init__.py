"""The web dashboard: a single page at ``/``, its files under ``/static``, and
the live WebSockets under ``/ws`` (``controller.web.live``).

The page is a small hand-written JavaScript application (ES modules, no
framework, no build step) that talks to the REST API with the user's login
token, to ``/ws/*`` for live changes and to ``/v1`` for the playground.
These routes are not part of the REST API (they are absent from its OpenAPI
document).
"""

from __future__ import annotations

import weakref

from aiohttp import web

from controller.web.assets import ASSETS, Assets, index, static
from controller.web.live import (
    SOCKETS,
    WEB_OPTIONS,
    WebOptions,
    close_all,
    logs_socket,
    status_socket,
)

__all__ = ["WEB_OPTIONS", "WebOptions", "is_web_route", "setup_web"]

WEB_PREFIXES = ("/static/", "/ws/")


def is_web_route(path: str) -> bool:
    """Whether ``path`` (a route template) belongs to the dashboard, not the API."""
    return path == "/" or path.startswith(WEB_PREFIXES)


def setup_web(app: web.Application, options: WebOptions | None = None) -> None:
    app[ASSETS] = Assets()
    app[WEB_OPTIONS] = options or WebOptions()
    app[SOCKETS] = weakref.WeakSet()
    app.router.add_get("/", index)
    app.router.add_get("/static/{version}/{name:.+}", static)
    app.router.add_get("/ws/status", status_socket)
    app.router.add_get("/ws/logs/{deployment_id}", logs_socket)
    app.on_shutdown.append(close_all)
