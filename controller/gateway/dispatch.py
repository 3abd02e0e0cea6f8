"""Sending one request to an instance of its deployment: the choice, the count
and the one retry.

Guarantees:
* Each request goes to one instance of its deployment, chosen by the
  deployment's policy (``picking``) among the usable instances of the route
  as the table has it at that moment (``RouteTable.current``: a change the
  fleet announced meanwhile is seen) on workers online now. A route gone
  from the table meanwhile is ``model_not_found``.
* The request is counted at the chosen instance (its ``Lease``) before
  anything is awaited, so a drain that starts later waits for it; a retry
  moves the count, so a request is counted at one instance at a time.
* A request that got not a byte of an answer (``upstream.NoAnswer``: refused,
  connect timeout, reset or closed before answering) is sent once more, to
  another usable instance when there is one. Anything the engine answered
  (its own 4xx/5xx, a stream's first byte) is final: no retry.
* Failures leave as ``GatewayError`` 502 ``upstream_error`` naming the
  instance that failed last (``engine_failed``); ``Call.upstream`` is that
  instance, or the one that answered.

Concurrency: event loop only; choosing and counting are synchronous.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controller.auth import Identity
from controller.gateway.errors import GatewayError, model_not_found
from controller.gateway.inflight import InFlight, Lease
from controller.gateway.picking import Pickers
from controller.gateway.routes import Route, RouteTable, Upstream, usable
from controller.gateway.upstream import EngineClient, EngineResponse, NoAnswer
from controller.limits import Admission
from shared.errors import UpstreamError

__all__ = ["JSON", "Call", "Dispatcher", "engine_failed", "engine_timeout"]

log = logging.getLogger("lmstack.gateway")

JSON = "application/json"


@dataclass(slots=True)
class Call:
    """One forwarded request: what it is, and where it is being sent."""

    request: web.Request
    identity: Identity
    route: Route
    body: dict[str, Any]
    lease: Lease
    admitted: Admission | None
    # The instance last sent to (the one that answered, or failed last).
    upstream: Upstream | None = None


class Dispatcher:
    """Posts a call's payload to an instance of its route, once more elsewhere
    when the first gave no answer."""

    def __init__(
        self,
        client: EngineClient,
        *,
        routes: RouteTable,
        online: Callable[[str], bool],
        instances: InFlight,
    ) -> None:
        self._client = client
        self._routes = routes
        self._online = online
        self._pickers = Pickers(instances)

    async def send(self, call: Call, payload: bytes, *, whole: bool) -> EngineResponse:
        """Post ``payload`` to an instance of the call's route, and once more to
        another one when the first gave not a byte of an answer; the call's
        lease is at the instance that answered (or failed last)."""
        route = call.route
        candidates = await self._candidates(route)
        upstream = self._pick(call, candidates)
        try:
            return await self._post(call, upstream, payload, whole=whole)
        except NoAnswer as exc:
            candidates = [
                u for u in await self._candidates(route) if u.instance_id != upstream.instance_id
            ]
            if not candidates:
                raise engine_failed(route, upstream, exc) from None
            log.info("%s: no answer from %s (%s); retrying", route.name, upstream.base_url, exc)
            upstream = self._pick(call, candidates)
        except UpstreamError as exc:
            raise engine_failed(route, upstream, exc) from None
        try:
            return await self._post(call, upstream, payload, whole=whole)
        except UpstreamError as exc:
            raise engine_failed(route, upstream, exc) from None

    async def _candidates(self, route: Route) -> list[Upstream]:
        """The usable instances of ``route`` as the table has it now."""
        current = await self._routes.current(route)
        if current is None:
            raise model_not_found(route.name)
        return usable(current, self._online)

    def _pick(self, call: Call, candidates: list[Upstream]) -> Upstream:
        upstream = self._pickers.pick(call.route, candidates, call.request.headers, call.body)
        call.lease.take(upstream.instance_id)  # counted before anything is awaited
        return upstream

    async def _post(
        self, call: Call, upstream: Upstream, payload: bytes, *, whole: bool
    ) -> EngineResponse:
        call.upstream = upstream
        return await self._client.post(
            upstream.host, upstream.port, call.request.path, payload, content_type=JSON,
            whole=whole,
        )  # fmt: skip


def engine_timeout(route: Route) -> GatewayError:
    """504: the engine did not answer in time."""
    return GatewayError(504, "upstream_timeout", f"Engine of '{route.name}' did not answer in time")


def engine_failed(route: Route, upstream: Upstream | None, exc: UpstreamError) -> GatewayError:
    """502: the engine at ``upstream`` (when known) failed with ``exc``."""
    at = f" at {upstream.base_url}" if upstream is not None else ""
    return GatewayError(502, "upstream_error", f"Engine of '{route.name}'{at} failed: {exc}")
