"""In-process publish/subscribe of live changes, for the dashboard's WebSockets.

The fleet publishes what a signed-in browser wants to see move without
polling: deployment status changes (``{"type": "deployment", ...}``), deleted
deployments (``{"type": "deployment_deleted", "id": ...}``) and workers going
online, offline or reporting GPU statistics (``{"type": "worker", ...}``).

Guarantees:
* ``publish`` never blocks and never raises: it is called from the fleet's hot
  paths (status reports, heartbeats).
* Every subscriber has its own bounded queue. A subscriber that falls behind
  loses its *oldest* events (and is told how many in ``dropped``), never
  slows the publisher or other subscribers. Events are plain JSON-ready dicts
  and are shared between subscribers: treat them as read-only.
* A subscription exists from ``subscribe()`` until its ``with`` block ends.

Concurrency: everything runs on the controller's event loop; no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

Event = dict[str, Any]
QUEUE_SIZE = 256


class Subscription:
    """One subscriber's queue. Iterate ``get()``; ``dropped`` counts lost events."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()


class EventHub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription(self._queue_size)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        for subscription in self._subscribers:
            subscription.offer(event)
