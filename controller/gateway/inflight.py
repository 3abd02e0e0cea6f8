"""Requests in flight per engine instance: what draining waits on, and what
load-aware routing will read.

A request holds a ``Lease`` from the moment the gateway starts sending it to
an instance until its answer has ended (a JSON body written, a stream's last
event sent) or failed, whatever the way out: engine errors, timeouts, the
client going away, a cancelled handler. A retry moves the lease to the other
instance, so a request is counted at one instance at a time.

Guarantees:
* ``in_flight(instance_id)`` is the number of leases on it; never negative
  (ending a lease twice counts once), and an instance at 0 keeps no entry.
* ``idle(instance_id, timeout)`` returns True as soon as the count is 0 (at
  once when it already is), False when ``timeout`` passes first. It waits on a
  future resolved by the lease that ends last, not by polling; a waiter that
  gives up leaves nothing behind.
* With ``controller.gateway.routes``: once an instance is committed as
  draining (or removed) and ``Fleet.changed()`` has returned, no request is
  newly leased to it, so ``idle`` waits exactly for the ones already sent.

Concurrency: event loop only; every change is synchronous (no locks).
"""

from __future__ import annotations

import asyncio

__all__ = ["InFlight", "Lease"]


class InFlight:
    """The gateway's in-flight counts, by instance id."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def in_flight(self, instance_id: str) -> int:
        return self._counts.get(instance_id, 0)

    def counts(self) -> dict[str, int]:
        """Every instance with requests in flight, and how many."""
        return dict(self._counts)

    def lease(self) -> Lease:
        """A lease on no instance yet (``Lease.take`` counts it at one)."""
        return Lease(self)

    # The deployment service's drainer calls it so (``controller.deployments.InFlight``).
    async def idle(self, instance_id: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``instance_id`` has no request in flight, at most
        ``timeout`` seconds; whether it became idle."""
        if instance_id not in self._counts:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return instance_id not in self._counts
        finally:
            # Timed out or cancelled: the waiter is still listed (a wake-up unlists all).
            waiters = self._waiters.get(instance_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[instance_id]

    def _start(self, instance_id: str) -> None:
        self._counts[instance_id] = self._counts.get(instance_id, 0) + 1

    def _end(self, instance_id: str) -> None:
        left = self._counts[instance_id] - 1
        if left:
            self._counts[instance_id] = left
            return
        del self._counts[instance_id]
        if self._waiters:
            for waiter in self._waiters.pop(instance_id, ()):
                if not waiter.done():
                    waiter.set_result(None)


class Lease:
    """One request's place in the counts: at most one instance at a time."""

    __slots__ = ("_counts", "instance_id")

    def __init__(self, counts: InFlight) -> None:
        self._counts = counts
        self.instance_id: str | None = None

    def take(self, instance_id: str) -> None:
        """Count the request at ``instance_id`` (and no longer where it was)."""
        self.end()
        self._counts._start(instance_id)
        self.instance_id = instance_id

    def end(self) -> None:
        """Stop counting the request; idempotent."""
        if self.instance_id is not None:
            instance_id, self.instance_id = self.instance_id, None
            self._counts._end(instance_id)
