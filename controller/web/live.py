"""The dashboard's WebSockets: ``/ws/status`` and ``/ws/logs/{deployment_id}``.

Authentication is the REST API's (login tokens and API keys, ``Authenticator``).
Browsers cannot put an ``Authorization`` header on a WebSocket, so the token
may instead come as the first message, ``{"type": "auth", "token": "..."}``,
within ``WebOptions.auth_timeout`` seconds. A header, when sent, is checked
before the upgrade (a bad one answers ``401`` like any REST call).

Server → client messages are JSON objects with a ``type``:

* both: ``ready`` (authenticated; carries ``user``), ``error`` (``message``).
* ``/ws/status``: the fleet's events (``controller.events``): ``deployment``,
  ``deployment_deleted``, ``worker``; ``resync`` when events were dropped
  because the client read too slowly (reload what you show).
* ``/ws/logs/{id}``: ``logs`` (``data``: the last ``tail`` lines, then new
  output as the engine writes it) and ``notice`` (``message``: why no log
  flows right now, e.g. the worker is offline or the container not yet
  created), ``instance`` (``id``, ``worker_id``: the instance whose log follows,
  sent before its first line and whenever another one takes over). The log is
  one instance's: the first running one (else the first
  placed). Following restarts by itself when that instance stops or gets a new
  container, another one becomes the first, or its worker comes back.

Close codes: ``4401`` no valid token in time, or the token stopped being valid
(user deleted, token expired: re-checked every ``revalidate_seconds``);
``4404`` the deployment does not exist or was deleted; ``1001`` the controller
is shutting down.

Guarantees: every socket is registered on the application and closed on
shutdown; each handler owns its tasks (reader, pump, watchdog) and cancels and
awaits them before it returns; leaving a log socket stops the agent's follow
(``StopFollow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from controller import appkeys
from controller.auth import Identity, bearer_token
from controller.events import Event, Subscription
from controller.fleet import LogFollow
from controller.http import path_id
from controller.store import Instance, uncancelled
from shared.errors import NotFound, ServiceUnavailable, Unauthorized
from shared.status import WorkerStatus

log = logging.getLogger("lmstack.web")

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
DEFAULT_TAIL = 200
MAX_TAIL = 10_000


@dataclass
class WebOptions:
    # Seconds a client has to send its token after connecting.
    auth_timeout: float = 5.0
    # How often a socket's token is checked again (deleted users, expiry).
    revalidate_seconds: float = 10.0
    # A log socket re-reads its deployment at least this often.
    logs_poll_seconds: float = 5.0


WEB_OPTIONS = web.AppKey("web_options", WebOptions)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("web_sockets")


class _Closed(Exception):
    """The socket was closed with this code; the handler ends."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def close_all(app: web.Application) -> None:
    """``on_shutdown``: close every open socket so handlers return promptly."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=1001, message=b"controller shutting down")


# ---------------------------------------------------------------- plumbing


async def _open(request: web.Request) -> tuple[web.WebSocketResponse, str | None]:
    """Check a header token (if any) before the upgrade, then upgrade."""
    header_token = None
    if "Authorization" in request.headers:
        header_token = bearer_token(request)
        await request.app[appkeys.AUTH].resolve(header_token)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    return ws, header_token


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse, header_token: str | None
) -> tuple[Identity, str]:
    auth = request.app[appkeys.AUTH]
    token = header_token
    if token is None:
        token = await _first_message_token(ws, request.app[WEB_OPTIONS].auth_timeout)
    try:
        identity = await auth.resolve(token)
    except Unauthorized as exc:
        raise _Closed(CLOSE_UNAUTHORIZED, exc.detail) from None
    await ws.send_json(
        {"type": "ready", "user": {"username": identity.username, "is_admin": identity.is_admin}}
    )
    return identity, token


async def _first_message_token(ws: web.WebSocketResponse, wait_seconds: float) -> str:
    try:
        message = await ws.receive(timeout=wait_seconds)
    except TimeoutError:
        raise _Closed(CLOSE_UNAUTHORIZED, "no token sent") from None
    if message.type != WSMsgType.TEXT:
        raise _Closed(CLOSE_UNAUTHORIZED, 'expected {"type": "auth", "token": ...}')
    try:
        data = json.loads(message.data)
    except json.JSONDecodeError:
        data = None
    token = data.get("token") if isinstance(data, dict) and data.get("type") == "auth" else None
    if not isinstance(token, str) or not token:
        raise _Closed(CLOSE_UNAUTHORIZED, 'expected {"type": "auth", "token": ...}')
    return token


async def _serve(
    request: web.Request,
    work: Callable[[web.WebSocketResponse, str], Coroutine[Any, Any, None]],
) -> web.WebSocketResponse:
    """Open, authenticate, run ``work`` beside the reader and the token
    watchdog until one of them ends, then close with the reason."""
    ws, header_token = await _open(request)
    try:
        _, token = await _authenticate(request, ws, header_token)
        await _first_of(_drain(ws), work(ws, token), _watchdog(request.app, token))
    except _Closed as closed:
        log.debug("closing %s (%d): %s", request.path, closed.code, closed.reason)
        if not ws.closed:
            with contextlib.suppress(ConnectionError):
                await ws.send_json({"type": "error", "message": closed.reason})
        await ws.close(code=closed.code, message=closed.reason.encode()[:120])
    except ConnectionError:
        pass  # the client went away mid-send
    finally:
        await ws.close()
        request.app[SOCKETS].discard(ws)
    return ws


async def _first_of(*work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` concurrently until the first finishes; cancel and await
    the rest; re-raise what the first raised."""
    tasks = [asyncio.create_task(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes."""
    async for _ in ws:
        pass


async def _watchdog(app: web.Application, token: str) -> None:
    auth = app[appkeys.AUTH]
    while True:
        await asyncio.sleep(app[WEB_OPTIONS].revalidate_seconds)
        try:
            await uncancelled(auth.resolve(token))
        except Unauthorized:
            raise _Closed(CLOSE_UNAUTHORIZED, "signed out: the token is no longer valid") from None


# ---------------------------------------------------------------- /ws/status


async def status_socket(request: web.Request) -> web.WebSocketResponse:
    events = request.app[appkeys.FLEET].events

    async def pump(ws: web.WebSocketResponse, token: str) -> None:
        with events.subscribe() as subscription:
            dropped = 0
            while True:
                event = await subscription.get()
                if subscription.dropped != dropped:
                    dropped = subscription.dropped
                    await ws.send_json({"type": "resync"})
                await ws.send_json(event)

    return await _serve(request, pump)


# ---------------------------------------------------------------- /ws/logs


def _tail(request: web.Request) -> int:
    try:
        tail = int(request.query.get("tail", DEFAULT_TAIL))
    except ValueError:
        tail = DEFAULT_TAIL
    return max(0, min(tail, MAX_TAIL))


async def logs_socket(request: web.Request) -> web.WebSocketResponse:
    deployment_id = path_id(request, "deployment_id", "Deployment")
    tail = _tail(request)
    app = request.app

    async def follow(ws: web.WebSocketResponse, token: str) -> None:
        with app[appkeys.FLEET].events.subscribe() as subscription:
            await _LogPump(app, ws, deployment_id, tail, subscription).run()

    return await _serve(request, follow)


class _LogPump:
    """Follows one deployment's log across instances and containers, and reconnects.

    The instance followed is the deployment's log source (``DeploymentService.
    log_source``: its first running instance, else its first placed one); when
    that instance stops (scaled down, replaced by a rolling update) or gets a new
    container, the pump follows whichever instance is the source then.
    """

    def __init__(
        self,
        app: web.Application,
        ws: web.WebSocketResponse,
        deployment_id: str,
        tail: int,
        subscription: Subscription,
    ) -> None:
        self._app = app
        self._ws = ws
        self._id = deployment_id
        self._tail = tail
        self._events = subscription
        # The (instance, container, restarts) whose log was delivered to its end:
        # a restart in the same container is followed again.
        self._followed: tuple[str, str, int] | None = None
        self._instance = ""  # the instance last announced
        self._notice = ""

    async def run(self) -> None:
        fleet = self._app[appkeys.FLEET]
        while True:
            source = await self._source()
            if source is None or source.worker_id is None:
                await self._say("waiting for the scheduler to place this deployment")
            elif not fleet.is_connected(source.worker_id):
                await self._say("the worker is offline; logs resume when it is back")
            elif self._followed != _run_of(source):
                await self._follow(source.worker_id, source)
            await self._wait_for_change()

    async def _source(self) -> Instance | None:
        """The instance to follow; ``None`` while none is placed."""
        service = self._app[appkeys.DEPLOYMENTS]
        try:
            return await uncancelled(service.log_source(self._id, None))
        except NotFound as exc:
            raise _Closed(CLOSE_NOT_FOUND, f"Deployment '{self._id}' not found or deleted") from exc
        except ServiceUnavailable:
            return None

    async def _follow(self, worker_id: str, source: Instance) -> None:
        follow: LogFollow
        delivered = False
        if source.id != self._instance:
            self._instance = source.id
            await self._ws.send_json({"type": "instance", "id": source.id, "worker_id": worker_id})
        try:
            async with self._app[appkeys.FLEET].follow_logs(
                worker_id, source.id, self._id, self._tail
            ) as follow:
                async for data in follow.chunks():
                    delivered = True
                    self._notice = ""
                    await self._ws.send_json({"type": "logs", "data": data})
        except ServiceUnavailable as exc:
            await self._say(exc.detail)
            return
        if follow.end_reason:
            # Cut short (worker gone, instance stopped, container missing): follow
            # again on the next change; a few lines may then repeat, none are lost.
            self._followed = None
            await self._say(f"no log right now: {follow.end_reason}")
        elif delivered or source.container_id:
            # The container's log ended: follow again only for a new container.
            now = await self._source()
            self._followed = _run_of(now if now is not None and now.id == source.id else source)

    async def _say(self, message: str) -> None:
        if message != self._notice:
            self._notice = message
            await self._ws.send_json({"type": "notice", "message": message})

    async def _wait_for_change(self) -> None:
        """Until an event about this deployment (or any worker), or the poll interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._app[WEB_OPTIONS].logs_poll_seconds):
                while not _concerns(await self._events.get(), self._id):
                    pass


def _run_of(instance: Instance) -> tuple[str, str, int]:
    """What one run of an instance's engine is known by."""
    return (instance.id, instance.container_id or "", instance.restarts)


def _concerns(event: Event, deployment_id: str) -> bool:
    kind = event.get("type")
    if kind == "deployment":
        return bool(event["deployment"]["id"] == deployment_id)
    if kind == "deployment_deleted":
        return bool(event["id"] == deployment_id)
    return kind == "worker" and event["change"] in tuple(WorkerStatus)
