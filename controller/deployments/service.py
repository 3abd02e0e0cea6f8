"""The deployment service: the one owner of "never over-commit a GPU or a port".

Guarantees:
* One placement decision at a time. ``create`` holds the service's placement
  lock from reading the ledger until the new row is committed and booked, so
  two creates can never take the same GPU capacity or host port. A commit that
  fails gives the booking back before the lock is released.
* A name is unique: checked under the lock, and the database's unique index
  (translated to ``Conflict`` by the store) catches any writer that bypassed it.
* ``delete`` releases the booking only once the row is gone, so a failed delete
  keeps its resources booked; the agent is told to stop and remove the
  container (an agent that is away gets it removed when it reconnects).
* The agent is commanded only after the commit: it never runs a deployment the
  store does not know.

Concurrency: runs on the controller's event loop. The ledger
(``controller.scheduler``) is mutated only under this service's lock, or
before the API serves (``Scheduler.load``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from controller.fleet import Fleet
from controller.scheduler import Placement, Refusal, Scheduler, explain
from controller.schemas import DeploymentCreate, DeploymentListQuery
from controller.store import Database, Deployment, Worker, commit_or_conflict
from controller.store.models import new_id
from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.status import WorkerStatus


class DeploymentService:
    def __init__(self, db: Database, fleet: Fleet, scheduler: Scheduler) -> None:
        self._db = db
        self._fleet = fleet
        self._scheduler = scheduler
        self._placement_lock = asyncio.Lock()

    # ------------------------------------------------------------ reads

    async def get(self, deployment_id: str) -> Deployment:
        async with self._db.session() as session:
            return await _get(session, deployment_id)

    async def page(
        self, query: DeploymentListQuery, columns: Sequence[InstrumentedAttribute[Any]]
    ) -> tuple[list[RowMapping], int]:
        """One page of ``columns`` in creation order, and the total count."""
        conditions = []
        if query.status is not None:
            conditions.append(Deployment.status == query.status)
        if query.worker_id is not None:
            conditions.append(Deployment.worker_id == query.worker_id)
        async with self._db.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(Deployment).where(*conditions)
            )
            rows = await session.execute(
                select(*columns)
                .where(*conditions)
                .order_by(Deployment.created_at, Deployment.id)
                .offset(query.skip)
                .limit(query.limit)
            )
            return list(rows.mappings()), total or 0

    async def logs(self, deployment_id: str, lines: int) -> str:
        row = await self.get(deployment_id)
        if row.worker_id is None:
            raise ServiceUnavailable(f"Deployment '{row.name}' is not placed on a worker yet")
        return await self._fleet.fetch_logs(row.worker_id, row.id, lines)

    # ------------------------------------------------------------ changes

    async def create(self, spec: DeploymentCreate) -> Deployment:
        """Place, store and book the deployment, then command its agent."""
        taken = f"A deployment named '{spec.name}' already exists"
        async with self._placement_lock, self._db.session() as session:
            if await session.scalar(select(Deployment.id).where(Deployment.name == spec.name)):
                raise Conflict(taken)
            placement = await self._place(session, spec)
            row = Deployment(
                id=new_id(),
                name=spec.name,
                backend=spec.backend,
                model=spec.model,
                config=spec.config.to_mapping(),
                worker_id=placement.worker_id,
                gpu_indices=list(placement.gpu_indices),
                port=placement.port,
            )
            session.add(row)
            # Booked before the first await, released again if the commit fails.
            self._scheduler.book(row.id, placement)
            try:
                await commit_or_conflict(session, taken)
            except BaseException:
                self._scheduler.release(row.id)
                raise
        await self._fleet.deploy(row)
        return row

    async def _place(self, session: AsyncSession, spec: DeploymentCreate) -> Placement:
        """Where the new deployment goes: 404/503 for a named worker that is
        missing or offline, 409 naming every worker considered when nothing fits."""
        fleet, scheduler = self._fleet, self._scheduler
        if spec.worker_id is not None:
            worker = await session.get(Worker, spec.worker_id)
            if worker is None:
                raise NotFound(f"Worker '{spec.worker_id}' not found")
            if worker.status != WorkerStatus.ONLINE or not fleet.is_connected(worker.id):
                raise ServiceUnavailable(f"Worker '{worker.name}' is offline")
            result = scheduler.place_on(
                spec.name, spec.backend, spec.config, fleet.session(worker.id)
            )
            if isinstance(result, Refusal):
                raise explain(result)
            return result
        result = scheduler.place_anywhere(
            spec.name, spec.backend, spec.config, fleet.live_sessions()
        )
        if isinstance(result, Refusal):
            # Only a refusal reads the store, to name the workers that are away.
            online = {worker.id for worker in result.rejected}
            workers = await session.execute(select(Worker.id, Worker.name))
            raise explain(result, [name for worker_id, name in workers if worker_id not in online])
        return result

    async def delete(self, deployment_id: str) -> None:
        async with self._db.session() as session:
            row = await _get(session, deployment_id)
            worker_id = row.worker_id
            await session.delete(row)
            await session.commit()
        async with self._placement_lock:
            self._scheduler.release(deployment_id)
        if worker_id is not None:
            await self._fleet.stop(worker_id, deployment_id)


async def _get(session: AsyncSession, deployment_id: str) -> Deployment:
    row = await session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"Deployment '{deployment_id}' not found")
    return row
