"""Name-keyed serialisation: one container name, one Docker operation at a time.

Docker container names are unique per engine, and two instances can want one
name (``lmstack-<deployment name>-<short instance id>``, or ``lmstack-<name>`` for
a container made before instances): a deleted instance's orphan and a new one of
the same name, handled on two session lanes at once. Removing the one and
creating the other must not overlap, or the create meets the name still held
(``Conflict. The container name "/lmstack-…" is already in use``).

Guarantee: the sections run through ``NameLocks.run`` for one name never
overlap, and run in the order they asked for the name (``asyncio.Lock`` is
FIFO). A caller cancelled inside a section still lets it finish before the next
one starts: its Docker work runs in a thread that cannot be stopped, so the
lock is held until that thread is done (the caller's cancellation is raised
afterwards).

Concurrency model: the event loop only; a name's lock exists while someone
holds or waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class NameLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    def busy(self, name: str) -> bool:
        """Whether a section for ``name`` runs or waits (for tests and logs)."""
        return self._users[name] > 0

    async def run(self, name: str, section: Callable[[], Awaitable[T]]) -> T:
        """``section()`` with ``name`` held; see the module docstring."""
        async with self._held(name):
            task = asyncio.ensure_future(section())
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved: the caller's cancellation wins
                raise

    @contextlib.asynccontextmanager
    async def _held(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[name] -= 1
            if self._users[name] <= 0:
                del self._users[name]
                del self._locks[name]
