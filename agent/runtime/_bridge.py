"""The one bridge from a blocking iterator in a worker thread to the event loop.

Image pulls (Docker's progress events) and log following (Docker's log stream) both
read a blocking iterator; ``iterate_in_thread`` runs it in a worker thread and hands
its items to the loop.

Guarantees:

* **Order and completeness.** Items arrive in the iterator's order; an exception the
  iterator raises is raised, as is, to the consumer after the items before it.
* **Backpressure.** At most ``buffer`` items wait for a slow consumer; then the thread
  waits, so a chatty stream cannot grow memory without bound.
* **Release.** When the consumer stops (the iterator ended, it broke off, raised, or
  was cancelled, or ``aclose()``), the thread is told to stop, a thread blocked on the
  full buffer is freed, ``close`` (if given) runs in a thread to unblock one that waits
  on a socket, and the thread is awaited for up to ``THREAD_GRACE`` seconds. A thread
  that still blocks in an uninterruptible read stops at its next item.
* **A vanished loop** (closed, or shutting down) makes the thread stop quietly.

Concurrency model: the thread only ever touches the queue through the loop
(``run_coroutine_threadsafe``) and a ``threading.Event``; everything else runs on the
loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

# Seconds the consumer waits for the reader thread once it stops.
THREAD_GRACE = 5.0


class _Failed:
    """The iterator raised ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _End:
    """The iterator is exhausted."""


class _Reader(Generic[T]):
    """The worker thread's side: iterate, hand over, stop when told."""

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[T | _Failed | _End] = asyncio.Queue(maxsize=buffer)
        self.stop = threading.Event()

    def run(self, produce: Callable[[], Iterable[T]]) -> None:
        try:
            for item in produce():
                if self.stop.is_set():
                    return
                self._put(item)
        except Exception as exc:
            self._put(_Failed(exc))
        finally:
            self._put(_End())

    def _put(self, item: T | _Failed | _End) -> None:
        if self.stop.is_set():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.queue.put(item), self._loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            self.stop.set()  # the loop or the consumer is gone

    def release(self) -> None:
        """Consumer side: stop, and free a thread that waits on the full queue."""
        self.stop.set()
        while not self.queue.empty():
            self.queue.get_nowait()


async def iterate_in_thread(
    produce: Callable[[], Iterable[T]],
    *,
    buffer: int = 64,
    close: Callable[[], None] | None = None,
) -> AsyncGenerator[T, None]:
    """Iterate ``produce()`` in a worker thread; yield its items on the loop.

    ``close`` is called (in a thread, errors ignored) when the consumer stops, to
    unblock a read the stop flag alone cannot interrupt. Use it with
    ``contextlib.aclosing`` so leaving early releases the thread at once.
    """
    reader: _Reader[T] = _Reader(asyncio.get_running_loop(), buffer)
    thread = asyncio.ensure_future(asyncio.to_thread(reader.run, produce))
    try:
        while not isinstance(item := await reader.queue.get(), _End):
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        reader.release()
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(close)
        await asyncio.wait({thread}, timeout=THREAD_GRACE)
