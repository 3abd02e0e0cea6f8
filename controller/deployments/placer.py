"""Placing, booking and commanding new instances: the one path every change takes.

Guarantees:
* ``lock`` is the placement lock: every caller that reads the ledger to place,
  or gives bookings back, holds it until its rows are committed, so two
  decisions never take the same GPU capacity or host port.
* ``place`` books every instance it returns (``Scheduler.place_replicas``:
  all of them or none); ``commit_booked`` gives those bookings back when the
  commit fails. Nothing is sent to an agent before the commit (``send``).
* When a pass could place only some instances, or none, why is kept per
  deployment (``unplaced``) for its status message, and cleared once all fit.

Concurrency: event loop only; the caller holds ``lock`` around ``place`` and
``commit_booked``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.fleet import Fleet
from controller.scheduler import ReplicaRefusal, ReplicaRequest, Scheduler, explain_replicas
from controller.store import Deployment, Instance, Worker, commit_or_conflict
from controller.store.models import new_id
from controller.store.timeutil import utcnow
from shared.engines import EngineConfig
from shared.errors import NotFound, ServiceUnavailable
from shared.status import DeploymentStatus, WorkerStatus

# (model, config, spec_version) a new instance is made of, when not its deployment's.
Template = tuple[str, dict[str, Any], int]


class Placer:
    def __init__(self, fleet: Fleet, scheduler: Scheduler) -> None:
        self.lock = asyncio.Lock()
        self._fleet = fleet
        self._scheduler = scheduler
        # Deployment id → why some of its instances could not be placed.
        self.unplaced: dict[str, str] = {}

    async def check_pinned(self, session: AsyncSession, worker_id: str) -> None:
        """404 for a named worker that does not exist, 503 for one that is away."""
        worker = await session.get(Worker, worker_id)
        if worker is None:
            raise NotFound(f"Worker '{worker_id}' not found")
        if worker.status != WorkerStatus.ONLINE or not self._fleet.is_connected(worker.id):
            raise ServiceUnavailable(f"Worker '{worker.name}' is offline")

    async def place(
        self,
        session: AsyncSession,
        row: Deployment,
        count: int,
        existing: dict[str, int],
        *,
        strict: bool,
        template: Template | None = None,
    ) -> list[Instance]:
        """Place and book ``count`` new instances of ``row`` (added to
        ``session``). ``strict``: all or ``Conflict``; else as many as fit (the
        reason for the rest is kept in ``unplaced``). The caller commits
        (``commit_booked``)."""
        if count <= 0:
            return []
        model, config_map, version = template or (row.model, row.config, row.spec_version)
        config = EngineConfig.from_mapping(config_map)
        pinned = None
        if row.pinned_worker_id is not None:
            if not self._fleet.is_connected(row.pinned_worker_id):
                if strict:
                    raise ServiceUnavailable(f"Worker '{row.pinned_worker_id}' is offline")
                self.unplaced[row.id] = "its worker is offline"
                return []
            pinned = self._fleet.session(row.pinned_worker_id)
        elif not strict and not self._fleet.connected:
            self.unplaced[row.id] = "no worker is online"
            return []
        wanted = count
        while True:
            ids = tuple(new_id() for _ in range(wanted))
            request = ReplicaRequest(row.name, row.backend, config, ids, existing)
            result = self._scheduler.place_replicas(request, self._fleet.live_sessions(), pinned)
            if not isinstance(result, ReplicaRefusal):
                break
            if strict:
                raise explain_replicas(result, await self._offline_names(session))
            if result.fitted <= 0:
                self.unplaced[row.id] = explain_replicas(result).detail
                return []
            # Placement is deterministic: asking for the ones that fit succeeds.
            self.unplaced[row.id] = explain_replicas(result).detail
            wanted = result.fitted
        if wanted == count:
            self.unplaced.pop(row.id, None)
        instances = [
            Instance(
                id=instance_id,
                deployment_id=row.id,
                worker_id=placement.worker_id,
                gpu_indices=list(placement.gpu_indices),
                port=placement.port,
                status=DeploymentStatus.PENDING,
                status_message="",
                model=model,
                config=dict(config_map),
                spec_version=version,
                created_at=utcnow(),
            )
            for instance_id, placement in zip(ids, result, strict=True)
        ]
        session.add_all(instances)
        return instances

    async def _offline_names(self, session: AsyncSession) -> list[str]:
        workers = await session.execute(select(Worker.id, Worker.name))
        return [name for wid, name in workers if not self._fleet.is_connected(wid)]

    async def commit_booked(
        self, session: AsyncSession, instances: Sequence[Instance], taken: str = ""
    ) -> None:
        """Commit; the bookings of ``instances`` are given back if it fails."""
        try:
            await commit_or_conflict(session, taken or "conflicting change")
        except BaseException:
            for instance in instances:
                self._scheduler.release(instance.id)
            raise

    def release(self, instance_id: str) -> None:
        """Give the instance's booking back (under ``lock``)."""
        self._scheduler.release(instance_id)

    def send(self, row: Deployment, instances: Sequence[Instance]) -> None:
        """After the commit: tell dashboards, and each instance's agent to deploy it."""
        self._fleet.publish_deployment(row)
        for instance in instances:
            self._fleet.deploy(instance, row.name, row.backend)
