"""Admission per deployment: at most ``max_parallel`` requests at its engine, a
bounded FIFO queue in front of it, and a 429 when the queue cannot help.

A deployment whose config sets ``max_parallel`` (``shared.engines.EngineConfig``)
gets a gate. A request is admitted at once while fewer than ``max_parallel`` are
in flight and nobody waits; otherwise it joins a queue of at most ``max_queued``
(default ``4 * max_parallel``) and waits up to ``queue_timeout`` seconds
(default 30) for a slot. A full queue or a wait that times out is refused with
429 in OpenAI's shape (``type`` ``rate_limit_exceeded``, ``code``
``deployment_max_parallel``) and ``Retry-After: 1``, which the openai SDKs
honour when they retry.

Guarantees:

* At most ``max_parallel`` requests of a deployment hold a slot at once (after
  its limit is lowered, the ones already in flight finish; no new one starts
  until they are under it).
* FIFO: a freed slot goes to the oldest waiter, directly (no barging: a new
  request never overtakes a waiting one).
* A slot is always given back: admission is an ``async with`` around the whole
  forwarding, released in ``finally`` on success, errors, timeouts and
  cancelled or abandoned streams. A waiter that gives up at the moment it was
  granted a slot passes that slot on.
* A client that disconnects while queued leaves the queue within
  ``probe_interval`` seconds (aiohttp does not cancel handlers when the client
  goes away, so waiters look at their connection while they wait).
* The limits come from the route table (``Route.admission``), so a changed
  config applies when routes reload; a raised ``max_parallel`` wakes waiters
  at once.
* A deployment without ``max_parallel`` costs one attribute test: ``admit``
  returns a shared no-op context.

Concurrency: event loop only; no locks (every state change is synchronous).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from controller.gateway.errors import GatewayError
from shared.engines import EngineConfig

__all__ = [
    "DEFAULT_QUEUE_TIMEOUT",
    "QUEUE_FACTOR",
    "REFUSAL_CODE",
    "AdmissionLimits",
    "DeploymentGates",
]

log = logging.getLogger("lmstack.gateway.admission")

DEFAULT_QUEUE_TIMEOUT = 30.0
# The queue's default bound, in multiples of max_parallel.
QUEUE_FACTOR = 4
REFUSAL_CODE = "deployment_max_parallel"
RETRY_AFTER_SECONDS = 1
# Status of a queued request whose client went away (nginx's "client closed request").
CLIENT_GONE = 499

_FREE: AbstractAsyncContextManager[None] = contextlib.nullcontext()


@dataclass(frozen=True)
class AdmissionLimits:
    """One deployment's gate: slots, queue bound and the longest wait (seconds)."""

    max_parallel: int
    max_queued: int
    queue_timeout: float

    @classmethod
    def of(cls, config: EngineConfig) -> AdmissionLimits | None:
        """The gate ``config`` asks for; None without ``max_parallel``."""
        if config.max_parallel is None:
            return None
        queued = config.max_queued
        timeout = config.queue_timeout
        return cls(
            max_parallel=config.max_parallel,
            max_queued=QUEUE_FACTOR * config.max_parallel if queued is None else queued,
            queue_timeout=DEFAULT_QUEUE_TIMEOUT if timeout is None else timeout,
        )


class Gated(Protocol):
    """What ``admit`` needs of a route (``routes.Route`` is one)."""

    @property
    def deployment_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def admission(self) -> AdmissionLimits | None: ...


class Client(Protocol):
    """The waiting request's connection (``aiohttp.web.Request`` is one)."""

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...


class _Gate:
    __slots__ = ("in_flight", "limits", "waiters")

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def resize(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        while self.in_flight < limits.max_parallel and self._grant():
            self.in_flight += 1

    def release(self) -> None:
        """Give a slot back: to the oldest waiter while under the limit."""
        if self.in_flight > self.limits.max_parallel or not self._grant():
            self.in_flight -= 1

    def _grant(self) -> bool:
        """Hand one slot to the oldest live waiter; False when none waits."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False


class DeploymentGates:
    """Every deployment's gate, made on its first limited request."""

    def __init__(self, *, probe_interval: float = 0.25) -> None:
        self._probe = probe_interval
        self._gates: dict[str, _Gate] = {}

    def admit(self, route: Gated, client: Client) -> AbstractAsyncContextManager[None]:
        """Hold one of ``route``'s slots for the block; raises ``GatewayError``
        (429, or 499 when ``client`` went away) when it gets none."""
        limits = route.admission
        if limits is None:
            return _FREE
        return self._admitted(route, limits, client)

    def in_flight(self, deployment_id: str) -> int:
        gate = self._gates.get(deployment_id)
        return gate.in_flight if gate is not None else 0

    def queued(self, deployment_id: str) -> int:
        gate = self._gates.get(deployment_id)
        return sum(not w.done() for w in gate.waiters) if gate is not None else 0

    @contextlib.asynccontextmanager
    async def _admitted(
        self, route: Gated, limits: AdmissionLimits, client: Client
    ) -> AsyncIterator[None]:
        gate = self._gate(route.deployment_id, limits)
        await self._acquire(gate, route, client)
        try:
            yield
        finally:
            gate.release()

    def _gate(self, deployment_id: str, limits: AdmissionLimits) -> _Gate:
        gate = self._gates.get(deployment_id)
        if gate is None:
            gate = self._gates[deployment_id] = _Gate(limits)
        elif gate.limits != limits:
            gate.resize(limits)
        return gate

    async def _acquire(self, gate: _Gate, route: Gated, client: Client) -> None:
        limits = gate.limits
        if gate.in_flight < limits.max_parallel and not gate.waiters:
            gate.in_flight += 1
            return
        if len(gate.waiters) >= limits.max_queued:
            raise _refused(route, f"its queue is full ({limits.max_queued} waiting)")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        gate.waiters.append(waiter)
        deadline = loop.time() + limits.queue_timeout
        try:
            while not waiter.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _refused(route, f"no slot freed within {limits.queue_timeout:g} s")
                await asyncio.wait((waiter,), timeout=min(remaining, self._probe))
                if not waiter.done() and _gone(client):
                    raise GatewayError(CLIENT_GONE, "client_closed_request", "Client went away")
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                gate.release()  # granted just as it gave up: pass the slot on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    gate.waiters.remove(waiter)
            raise


def _gone(client: Client) -> bool:
    transport = client.transport
    return transport is None or transport.is_closing()


def _refused(route: Gated, why: str) -> GatewayError:
    log.debug("refused a request for %s: %s", route.name, why)
    return GatewayError(
        429,
        REFUSAL_CODE,
        f"Deployment '{route.name}' is at its max_parallel and {why}; retry later",
        type="rate_limit_exceeded",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
