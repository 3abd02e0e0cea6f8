"""The reconciliation loop: each deployment's instances brought to the desired set.

Guarantees:
* A pass first reads and decides without the lock or any write; when nothing
  is to be done (the usual case: no plan acts, no aggregate changes, no drain
  is missing) it ends there. Otherwise it reads again in one session under the
  placement lock, decides per deployment with ``plan`` (scaling, rolling
  updates, rescheduling lost workers' instances), places and books what it
  adds, marks what it removes ``draining`` and refreshes the aggregate, all
  committed together. Only then are agents commanded, dashboards told of the
  deployments it changed, the fleet told (so the gateway stops routing to the
  draining ones) and the drains started.
* A pass runs at once after ``kick`` (the deployment service after a change,
  the fleet after an instance's status report: only those deployments) and a
  full pass at least every ``interval`` seconds, which is what notices workers
  offline longer than ``reschedule_after``, and workers back with room for
  instances that did not fit.
* A worker is lost when it has been offline (not connected, its stored
  ``offline_since`` older than the grace) or when its instance has no worker.
* A draining instance without a drain (after a restart, or a failed drain) gets
  one on the next pass.

Concurrency: ``run`` is one background loop (owned by ``controller.background``
through the app), ended by ``shut_down`` between passes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.deployments.drainer import Drainer
from controller.deployments.placer import Placer
from controller.deployments.plan import InstanceView, Plan, plan
from controller.deployments.queries import per_worker
from controller.fleet import Fleet
from controller.store import Database, Deployment, Instance, Worker, aggregate
from controller.store.timeutil import utcnow
from shared.engines import EngineConfig

log = logging.getLogger("lmstack.deployments")

# A full reconciliation pass at least this often.
RECONCILE_SECONDS = 5.0


class Reconciler:
    def __init__(
        self,
        db: Database,
        fleet: Fleet,
        placer: Placer,
        drainer: Drainer,
        interval: float = RECONCILE_SECONDS,
    ) -> None:
        self._db = db
        self._fleet = fleet
        self._placer = placer
        self._drainer = drainer
        self._interval = interval
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._stopping = False

    def kick(self, deployment_id: str | None = None) -> None:
        """Reconcile ``deployment_id`` (all when None) soon."""
        if deployment_id is not None:
            self._dirty.add(deployment_id)
        self._wake.set()

    def shut_down(self) -> None:
        """Ends ``run`` after its current pass."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        only: set[str] | None = None  # the first pass is a full one
        while not self._stopping:
            try:
                await self.reconcile(only)
            except Exception:
                log.exception("reconciliation pass failed; will retry")
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                only = None
            else:
                self._wake.clear()
                # Empty: a kick of all (or a shut down): a full pass.
                only, self._dirty = self._dirty or None, set()

    async def reconcile(self, only: set[str] | None = None) -> None:
        """One pass over every deployment (or ``only`` those). Most passes change
        nothing: they are decided from a read without the lock and end there."""
        now = utcnow()
        async with self._db.session() as session:
            deployments, instances, offline = await self._read(session, only)
            if not any(
                self._pending(row, instances.get(row.id, []), offline, now) for row in deployments
            ):
                return
        async with self._placer.lock, self._db.session() as session:
            with session.no_autoflush:  # nothing is written before the commit
                deployments, instances, offline = await self._read(session, only)
                touched: list[tuple[Deployment, list[Instance]]] = []
                for row in deployments:
                    mine = instances.get(row.id, [])
                    added = await self._apply(session, row, mine, offline, now)
                    changed = aggregate.apply(row, [*mine, *added], note=self._note(row))
                    if added or changed or any(i.draining for i in mine):
                        touched.append((row, added))
            await self._placer.commit_booked(session, [i for _, new in touched for i in new])
        changed = False
        for row, added in touched:
            changed |= bool(added)
            self._placer.send(row, added)
            timeout = EngineConfig.from_mapping(row.config).effective_drain_timeout
            for instance in instances.get(row.id, []):
                if instance.draining:
                    changed |= self._drainer.drain(instance.id, instance.worker_id, row.id, timeout)
        if changed:
            self._fleet.changed()  # after the commit: the gateway drops the draining

    def _note(self, row: Deployment) -> str:
        """Why some of the deployment's instances could not be placed, if so."""
        return self._placer.unplaced.get(row.id, "") if aggregate.desired_replicas(row) else ""

    def _pending(
        self,
        row: Deployment,
        instances: list[Instance],
        offline: dict[str, datetime | None],
        now: datetime,
    ) -> bool:
        """Whether a pass has anything to do for the deployment (``row`` is of a
        session that is not committed: its aggregate is tried on it)."""
        if not self._decide(row, instances, offline, now)[0].idle:
            return True
        if any(i.draining and not self._drainer.draining(i.id) for i in instances):
            return True
        return aggregate.apply(row, instances, note=self._note(row))

    async def _read(
        self, session: AsyncSession, only: set[str] | None
    ) -> tuple[list[Deployment], dict[str, list[Instance]], dict[str, datetime | None]]:
        """The deployments, their instances (creation order) and the offline workers
        (worker id → offline since)."""
        query = select(Deployment).order_by(Deployment.created_at)
        instance_query = select(Instance).order_by(Instance.created_at, Instance.id)
        if only is not None:
            query = query.where(Deployment.id.in_(sorted(only)))
            instance_query = instance_query.where(Instance.deployment_id.in_(sorted(only)))
        deployments = list(await session.scalars(query))
        instances: dict[str, list[Instance]] = {}
        if deployments:
            for instance in await session.scalars(instance_query):
                instances.setdefault(instance.deployment_id, []).append(instance)
        # Online workers have no offline_since: only the offline ones are read.
        offline = {
            wid: since
            for wid, since in await session.execute(
                select(Worker.id, Worker.offline_since).where(Worker.offline_since.is_not(None))
            )
            if not self._fleet.is_connected(wid)
        }
        return deployments, instances, offline

    def _decide(
        self,
        row: Deployment,
        instances: list[Instance],
        offline: dict[str, datetime | None],
        now: datetime,
    ) -> tuple[Plan, list[InstanceView]]:
        """The plan for one deployment, and the views it was made from."""
        grace = timedelta(seconds=EngineConfig.from_mapping(row.config).effective_reschedule_after)

        def lost(instance: Instance) -> bool:
            if instance.worker_id is None:
                return True
            since = offline.get(instance.worker_id)
            return bool(grace) and since is not None and now - since >= grace

        views = [
            InstanceView(
                id=i.id, spec_version=i.spec_version, status=i.status, created_at=i.created_at,
                draining=i.draining, lost=lost(i), status_message=i.status_message,
            )
            for i in instances
        ]  # fmt: skip
        decided = plan(
            aggregate.desired_replicas(row), row.spec_version, views,
            rollout_halted=bool(row.rollout_error),
        )  # fmt: skip
        return decided, views

    async def _apply(
        self,
        session: AsyncSession,
        row: Deployment,
        instances: list[Instance],
        offline: dict[str, datetime | None],
        now: datetime,
    ) -> list[Instance]:
        """Carry out the plan for one deployment: the instances it placed (the
        ones it removes are marked ``draining``)."""
        decided, views = self._decide(row, instances, offline, now)
        if decided.idle:
            return []
        if decided.halt is not None:
            row.rollout_error = decided.halt
            log.warning("deployment %s: rolling update halted: %s", row.name, decided.halt)
        added: list[Instance] = []
        if decided.place:
            live = [i for i, v in zip(instances, views, strict=True) if not (v.draining or v.lost)]
            template = None
            if decided.template_old:
                newest = max(
                    (i for i in live if i.spec_version != row.spec_version),
                    key=lambda i: i.spec_version,
                )
                template = (newest.model, dict(newest.config), newest.spec_version)
            added = await self._placer.place(
                session, row, decided.place, per_worker(live), strict=False, template=template
            )
            if not added and decided.replace is not None:
                decided.drain.append(decided.replace)  # no room to surge: replace one
        by_id = {i.id: i for i in instances}
        for instance_id in decided.drain:
            if not by_id[instance_id].draining:
                by_id[instance_id].draining = True
                log.info("deployment %s: draining instance %s", row.name, instance_id)
        return added
