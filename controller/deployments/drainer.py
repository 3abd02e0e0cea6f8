"""Draining: an instance being removed finishes its requests, then goes.

Guarantees:
* The caller has committed the instance as ``draining`` (or deleted its
  deployment) and told the fleet, so the gateway routes it no new request.
  ``drain`` then waits until its in-flight requests end, at most its
  ``drain_timeout``; only then is its row deleted (with its deployment's
  aggregate), its booking released (under the placement lock) and its agent
  told to stop and remove the container. An agent that is away removes it as an
  orphan when it reconnects.
* One drain per instance at a time. A drain that fails leaves the row
  ``draining``; the next reconciliation pass starts it again, as it does after
  a controller restart.
* Every drain is a task owned here: ``close`` cancels and awaits them all, and
  none starts after it.

Concurrency: event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import delete

from controller.deployments.placer import Placer
from controller.fleet import Fleet
from controller.store import Database, Deployment, Instance, aggregate

log = logging.getLogger("lmstack.deployments")


class InFlight(Protocol):
    """The gateway's in-flight counts (``controller.gateway.inflight``)."""

    async def idle(self, instance_id: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until no request is in flight to the instance, at most ``timeout``
        seconds; whether it became idle."""
        ...


class Drainer:
    def __init__(
        self, db: Database, fleet: Fleet, placer: Placer, *, removed: Callable[[str], None]
    ) -> None:
        self._db = db
        self._fleet = fleet
        self._placer = placer
        # Called with the deployment id after each drain, done or failed.
        self._removed = removed
        self._in_flight: InFlight | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def use(self, in_flight: InFlight) -> None:
        """Wait on the gateway's counts (entered after the deployment service)."""
        self._in_flight = in_flight

    def draining(self, instance_id: str) -> bool:
        return instance_id in self._tasks

    def drain(
        self,
        instance_id: str,
        worker_id: str | None,
        deployment_id: str,
        timeout: float,
        *,
        row_gone: bool = False,
    ) -> bool:
        """Start the instance's drain unless one runs; whether one started."""
        if instance_id in self._tasks or self._closed:
            return False
        task = asyncio.create_task(
            self._drain(instance_id, worker_id, deployment_id, timeout, row_gone),
            name=f"drain {instance_id}",
        )
        self._tasks[instance_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(instance_id, None))
        return True

    async def close(self) -> None:
        """Cancel the drains in progress (they restart from the store)."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drain(
        self,
        instance_id: str,
        worker_id: str | None,
        deployment_id: str,
        timeout: float,  # noqa: ASYNC109 (the drain's bound, handed to the gateway)
        row_gone: bool,
    ) -> None:
        try:
            counts = self._in_flight
            if counts is not None and timeout > 0 and not await counts.idle(instance_id, timeout):
                log.info("instance %s: drain timed out after %gs", instance_id, timeout)
            async with self._placer.lock:
                if not row_gone:
                    await self._delete(instance_id, deployment_id)
                self._placer.release(instance_id)
            self._fleet.stop(worker_id, instance_id, deployment_id)
            log.info("instance %s of %s stopped and removed", instance_id, deployment_id)
        except Exception:
            # Kept draining in the store: the next pass starts it again.
            log.exception("removing instance %s failed; will retry", instance_id)
        finally:
            self._removed(deployment_id)

    async def _delete(self, instance_id: str, deployment_id: str) -> None:
        async with self._db.session() as session:
            await session.execute(delete(Instance).where(Instance.id == instance_id))
            row = await session.get(Deployment, deployment_id)
            if row is not None:
                await aggregate.refresh(session, row)
            await session.commit()
        if row is not None:
            self._fleet.publish_deployment(row)
