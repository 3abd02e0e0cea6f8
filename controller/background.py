"""The controller's background loops and what happens when one dies.

Guarantees:
* Every loop is a named task owned by a ``Background``: started by ``run``,
  which is an async context manager, and stopped (cancelled and awaited) when
  its block ends. None is left running after the application's cleanup.
* A loop that ends by itself with an exception is logged at once, with its
  traceback, and ``on_death`` is called: ``lmstack-controller`` then stops the
  process and exits non-zero, so a supervisor (systemd) restarts it, instead
  of the controller serving on while its work silently stopped. The first
  death is kept in ``died``.
* A loop that returns normally before it is stopped is reported the same way:
  a loop is meant to run until its owner stops it.

Concurrency: everything runs on the controller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

log = logging.getLogger("lmstack.controller")


class Background:
    def __init__(self, on_death: Callable[[str], None] | None = None) -> None:
        self._on_death = on_death
        self._stopping: set[asyncio.Task[Any]] = set()
        self.died: str | None = None

    @contextlib.asynccontextmanager
    async def run(
        self,
        name: str,
        loop: Coroutine[Any, Any, None],
        stop: Callable[[], None] | None = None,
    ) -> AsyncIterator[None]:
        """Run ``loop`` as task ``name`` while the block runs. After it, the loop
        is told to ``stop`` (a loop that ends between two passes) or else
        cancelled, and awaited."""
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(self._ended)
        try:
            yield
        finally:
            if not task.done():
                self._stopping.add(task)
                if stop is not None:
                    stop()
                else:
                    task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                if task in self._stopping:  # a death before the stop was reported then
                    log.exception("background loop %r failed while stopping", name)
            finally:
                self._stopping.discard(task)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task in self._stopping or task.cancelled():
            return
        error = task.exception()
        name = task.get_name()
        if error is not None:
            log.critical("background loop %r died", name, exc_info=error)
            reason = f"background loop {name!r} died: {error!r}"
        else:
            log.critical("background loop %r stopped before it was told to", name)
            reason = f"background loop {name!r} stopped before it was told to"
        if self.died is None:
            self.died = reason
        if self._on_death is not None:
            self._on_death(reason)
