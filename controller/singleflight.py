"""Concurrent loads of one key share one execution (the cache-stampede guard).

When a cached entry expires under load, every request in flight misses at
once; without this each of them would run the same database query. With it the
first caller loads and the others wait for its result (or its error).

Guarantees:
* At most one ``load`` per key runs at a time; callers arriving meanwhile get
  its result or the exception it raised.
* A waiter's own cancellation never cancels the shared load; if the caller
  running the load is cancelled, the waiters start over instead of seeing a
  cancellation that was not theirs.

Concurrency: event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        while (pending := self._calls.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this waiter was cancelled
                # The caller running the load was cancelled: start over.
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # handed to the waiters; nothing left to log
            raise
        finally:
            del self._calls[key]
        future.set_result(value)
        return value
