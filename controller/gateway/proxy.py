"""Forwarding a request to its engine, JSON or streamed.

Guarantees:
* One pooled keep-alive client (``upstream.EngineClient``) to all engines,
  owned by the app's lifecycle.
* Streams pass through event by event as they arrive, never buffered whole;
  idle streams get ``: keep-alive`` comments; an error after the stream has
  started is sent as an SSE ``data:`` event followed by ``[DONE]``.
* When the client goes away the upstream request is closed, so the engine
  stops generating for nobody.
* Errors before a response has started: engine unreachable or broken → 502,
  engine too slow → 504 (OpenAI-shaped, see ``errors.py``). Answers the engine
  gives itself (including its own 4xx/5xx) pass through unchanged.
* Which instance takes a request, and the one retry of a request that got no
  answer, are ``dispatch``'s (see its guarantees).
* Requests in flight are counted per instance (``inflight.InFlight``: from
  choosing the instance until the answer ended or failed, cancellation and
  departed clients included) and per deployment (for the metrics); each
  forwarded request is recorded in the metrics (status, latency, tokens, time
  to the first streamed event, gateway failures) and its usage recorded once,
  without touching the store.
* Under a key's or user's limits (``controller.limits``): ``admit`` before
  forwarding (refusals counted per key and limit), every answer carries the
  admission's ``x-ratelimit-*`` headers (streams included), and the engine's
  tokens are released to the limiter as they are recorded; the handler releases
  in ``finally`` whatever the outcome.

Concurrency: event loop only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controller.auth import Identity
from controller.gateway.dispatch import JSON, Call, Dispatcher, engine_failed, engine_timeout
from controller.gateway.errors import GatewayError, error_payload
from controller.gateway.inflight import InFlight
from controller.gateway.routes import Route, RouteTable
from controller.gateway.sse import SSEPassThrough
from controller.gateway.upstream import EngineClient, EngineResponse
from controller.gateway.usage import UsageRecorder
from controller.limits import Admission, Limiter
from controller.metrics import Metrics
from shared.errors import RateLimited, UpstreamError

log = logging.getLogger("lmstack.gateway")

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    # Tells nginx-style proxies in front of us not to buffer the stream.
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Timeouts:
    """The limits on an answer (connecting has its own, in the client)."""

    total: float
    keepalive: float


class Proxy:
    def __init__(
        self,
        client: EngineClient,
        usage: UsageRecorder,
        timeouts: Timeouts,
        metrics: Metrics | None = None,
        *,
        limiter: Limiter,
        routes: RouteTable,
        online: Callable[[str], bool],
        instances: InFlight,
    ):
        self._limiter = limiter
        self._metrics = metrics or Metrics()
        self._usage = usage
        self._timeouts = timeouts
        self.instances = instances
        dispatcher = Dispatcher(client, routes=routes, online=online, instances=instances)
        self._send = dispatcher.send
        # Requests being forwarded, by deployment id (names kept for metrics).
        self.in_flight: Counter[str] = Counter()
        self._names: dict[str, str] = {}

    def in_flight_by_name(self) -> dict[str, int]:
        """Requests being forwarded per deployment name; 0 for deployments
        served before, so their series stay continuous."""
        return {name: self.in_flight.get(i, 0) for i, name in self._names.items()}

    async def admit(self, identity: Identity) -> Admission:
        """Admission under ``identity``'s limits (only for one that is ``limited``)."""
        try:
            return await self._limiter.admit(identity)
        except RateLimited as exc:
            self._metrics.gateway_refused(identity.api_key_id or "", exc.code)
            raise

    def refused(self, identity: Identity, code: str) -> None:
        """Count a refusal by a limit that is not the key's or user's (the
        deployment's queue)."""
        self._metrics.gateway_refused(identity.api_key_id or "", code)

    def release(self, admitted: Admission) -> None:
        """End ``admitted`` (when the engine's tokens did not already)."""
        self._limiter.release(admitted, 0, 0)

    def rate_headers(self, identity: Identity) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers of an answer that admitted nothing."""
        return self._limiter.headers(identity) if identity.limited else {}

    async def forward(
        self,
        request: web.Request,
        identity: Identity,
        route: Route,
        body: dict[str, Any],
        *,
        raw: bytes | None = None,
        admitted: Admission | None = None,
    ) -> web.StreamResponse:
        """Forward ``body``; ``raw`` is its exact encoding when it needs no rewrite;
        ``admitted``: the caller's admission under its limits."""
        started = time.perf_counter()
        status = 500
        self.in_flight[route.deployment_id] += 1
        self._names[route.deployment_id] = route.name
        lease = self.instances.lease()
        call = Call(request, identity, route, body, lease, admitted)
        try:
            if body.get("stream") is True:
                response = await self._stream(call, started=started)
            else:
                payload = raw if raw is not None else json.dumps(body).encode()
                response = await self._json(call, payload)
            status = response.status
            return response
        except GatewayError as exc:
            status = exc.status_code
            self._metrics.gateway_error(route.name, exc.code)
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            lease.end()
            self._metrics.gateway_request(route.name, status, time.perf_counter() - started)
            self.in_flight[route.deployment_id] -= 1
            if self.in_flight[route.deployment_id] <= 0:
                del self.in_flight[route.deployment_id]

    def _record(
        self,
        identity: Identity,
        route: Route,
        usage: dict[str, Any] | None,
        admitted: Admission | None,
    ) -> None:
        usage = usage or {}
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        self._usage.record(
            api_key_id=identity.api_key_id,
            user_id=identity.user_id,
            deployment_id=route.deployment_id,
            deployment_name=route.name,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        self._metrics.gateway_tokens(route.name, prompt, completion)
        if admitted is not None:
            self._limiter.release(admitted, prompt, completion)

    async def _json(self, call: Call, payload: bytes) -> web.Response:
        route = call.route
        try:
            async with asyncio.timeout(self._timeouts.total):
                upstream = await self._send(call, payload, whole=True)
                data = await upstream.read()
        except TimeoutError:
            raise engine_timeout(route) from None
        except UpstreamError as exc:
            raise engine_failed(route, call.upstream, exc) from None
        status, content_type = upstream.status, upstream.headers.get("content-type", JSON)
        response = web.Response(body=data, status=status, headers={"Content-Type": content_type})
        if call.admitted is not None:
            response.headers.update(call.admitted.headers)
        # The answer leaves before the bookkeeping: it is off the client's path.
        await response.prepare(call.request)
        await response.write_eof()
        usage = None
        if status == 200 and content_type.startswith(JSON):
            usage = _usage_of(data)
        self._record(call.identity, route, usage, call.admitted)
        return response

    async def _stream(self, call: Call, *, started: float) -> web.StreamResponse:
        route, body, admitted = call.route, call.body, call.admitted
        options = body.get("stream_options")
        options = options if isinstance(options, dict) else {}
        wants_usage = bool(options.get("include_usage"))
        # Always ask for usage so streamed token counts are exact.
        body = {**body, "stream_options": {**options, "include_usage": True}}
        try:
            # The engine answers with headers before it generates; connecting
            # has its own, shorter limit inside the client.
            async with asyncio.timeout(self._timeouts.total):
                upstream = await self._send(call, json.dumps(body).encode(), whole=False)
        except TimeoutError:
            raise engine_timeout(route) from None
        events = SSEPassThrough(forward_usage_chunk=wants_usage)
        try:
            if upstream.status != 200 or not upstream.content_type.startswith("text/event-stream"):
                # The engine refused before streaming: pass its answer through.
                async with asyncio.timeout(self._timeouts.total):
                    data = await upstream.read()
                headers = {"Content-Type": upstream.headers.get("content-type", JSON)}
                if admitted is not None:
                    headers.update(admitted.headers)
                return web.Response(body=data, status=upstream.status, headers=headers)
            headers = SSE_HEADERS if admitted is None else {**SSE_HEADERS, **admitted.headers}
            response = web.StreamResponse(status=200, headers=headers)
            await response.prepare(call.request)
            try:
                await self._pump(upstream, response, events, call, started)
            except ConnectionResetError:
                log.info("client left a stream of %s; closing the upstream", route.name)
            return response
        finally:
            self._record(call.identity, route, events.usage, admitted)
            upstream.release()  # closes the connection unless it was read to its end

    async def _pump(
        self,
        upstream: EngineResponse,
        response: web.StreamResponse,
        events: SSEPassThrough,
        call: Call,
        started: float,
    ) -> None:
        route = call.route
        idle = 0.0
        first = True
        keepalive = self._timeouts.keepalive
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    data = await upstream.read_chunk()
            except TimeoutError:
                idle += keepalive
                if idle >= self._timeouts.total:
                    await self._fail(
                        response,
                        route,
                        504,
                        f"Engine of '{route.name}' stopped sending",
                        "upstream_timeout",
                    )
                    return
                await response.write(b": keep-alive\n\n")
                continue
            except UpstreamError as exc:
                broken = engine_failed(route, call.upstream, exc).detail
                await self._fail(response, route, 502, broken, "upstream_error")
                return
            idle = 0.0
            if not data:
                break
            out = events.feed(data)
            if out:
                if first:
                    first = False
                    self._metrics.first_token(route.name, time.perf_counter() - started)
                await response.write(out)
        rest = events.rest()
        if rest:
            await response.write(rest)
        if not events.done:
            await self._fail(
                response,
                route,
                502,
                f"Engine of '{route.name}' ended the stream early",
                "upstream_error",
            )
            return
        await response.write_eof()

    async def _fail(
        self, response: web.StreamResponse, route: Route, status: int, message: str, code: str
    ) -> None:
        """An error once the stream has started: an SSE data event, then [DONE]."""
        self._metrics.gateway_error(route.name, code)
        payload = json.dumps(error_payload(status, message, code)).encode()
        await response.write(b"data: " + payload + b"\n\n" + DONE)
        await response.write_eof()


def _usage_of(data: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of a JSON answer, decoding only that object (it
    comes last in OpenAI-style answers; the rest may be long)."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return None
    start = data.find(b"{", at)
    if start < 0 or data[at + 7 : start].strip(b" \t\r\n:"):
        return None  # "usage": null, or not the key we look for
    try:
        usage, _ = _DECODER.raw_decode(data[start:].decode("utf-8", "replace"))
    except ValueError:
        return None
    return usage if isinstance(usage, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
