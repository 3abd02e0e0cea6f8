"""The deployment service: the owner of deployments, their instances and of
"never over-commit a GPU or a port".

Guarantees:
* One placement decision at a time. Every change that places or removes
  instances (create, patch, stop, start, delete, and each reconciliation pass)
  holds the service's placement lock from reading the ledger until its rows
  are committed and booked, so two decisions never take the same GPU capacity
  or host port. A commit that fails gives its bookings back.
* A create, a scale-up and a start place all the instances they add, or
  none: ``409`` says how many could fit and why the rest could not.
* A name is unique: checked under the lock, and the database's unique index
  (translated to ``Conflict`` by the store) catches any writer that bypassed it.
* Removing an instance (scale down, rolling update, stop, delete, a lost
  worker's replaced instance) drains it first: it is marked ``draining`` and
  committed, so the gateway routes it no new request, then waits until its
  in-flight requests end or ``drain_timeout`` passes, and only then is its row
  deleted, its booking released and its agent told to stop and remove the
  container (an agent that is away removes it as an orphan when it returns).
* The agent is commanded only after the commit: it never runs an instance the
  store does not know.
* The actual set of instances is brought to the desired one by ``run`` (the
  reconciliation loop, ``controller.deployments.plan`` decides each pass):
  scaling, rolling updates, rescheduling after ``reschedule_after``.

Parts: ``placer`` (the lock, placing, booking, commanding), ``drainer``
(drains), ``reconciler`` (the loop), ``queries`` (reads); this module holds
the REST operations.

Concurrency: runs on the controller's event loop. The ledger
(``controller.scheduler``) is mutated only under the placement lock, or
before the API serves (``Scheduler.load``). Drains are tasks owned by the
drainer, cancelled and awaited by ``close``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, delete, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from controller.deployments.drainer import Drainer, InFlight
from controller.deployments.placer import Placer
from controller.deployments.queries import (
    NamedInstances,
    get_deployment,
    instance_rows,
    named_instances,
    per_worker,
)
from controller.deployments.reconciler import RECONCILE_SECONDS, Reconciler
from controller.fleet import Fleet
from controller.scheduler import Scheduler
from controller.schemas import DeploymentCreate, DeploymentListQuery, DeploymentPatch
from controller.store import Database, Deployment, Instance, aggregate
from controller.store.models import new_id
from shared.engines import SERVING_KEYS, EngineConfig
from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.status import DeploymentStatus


@dataclass(frozen=True)
class DeploymentView:
    """A deployment with its instances (and their workers' names)."""

    row: Deployment
    instances: list[tuple[Instance, str | None]]


class DeploymentService:
    def __init__(
        self,
        db: Database,
        fleet: Fleet,
        scheduler: Scheduler,
        *,
        reconcile_seconds: float = RECONCILE_SECONDS,
    ) -> None:
        self._db = db
        self._fleet = fleet
        self._placer = Placer(fleet, scheduler)
        self._drainer = Drainer(db, fleet, self._placer, removed=self.kick)
        self.reconciler = Reconciler(db, fleet, self._placer, self._drainer, reconcile_seconds)
        fleet.subscribe_instances(self.reconciler.kick)

    # ------------------------------------------------------------ lifecycle

    def use_in_flight(self, in_flight: InFlight) -> None:
        """Drains wait on the gateway's in-flight counts (entered after this)."""
        self._drainer.use(in_flight)

    def kick(self, deployment_id: str | None = None) -> None:
        self.reconciler.kick(deployment_id)

    async def run(self) -> None:
        """The reconciliation loop (``Reconciler.run``) until ``shut_down``."""
        await self.reconciler.run()

    def shut_down(self) -> None:
        self.reconciler.shut_down()

    async def close(self) -> None:
        """Cancel the drains in progress (they restart from the store)."""
        await self._drainer.close()

    async def reconcile(self, only: set[str] | None = None) -> None:
        await self.reconciler.reconcile(only)

    # ------------------------------------------------------------ reads

    async def get(self, deployment_id: str) -> DeploymentView:
        async with self._db.session() as session:
            row = await get_deployment(session, deployment_id)
            instances = await named_instances(session, [row.id])
            return DeploymentView(row, instances.get(row.id, []))

    async def views(self, deployment_ids: Sequence[str]) -> list[DeploymentView]:
        """Those of ``deployment_ids`` that exist, in creation order."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(Deployment)
                .where(Deployment.id.in_(list(deployment_ids)))
                .order_by(Deployment.created_at, Deployment.id)
            )
            found = list(rows)
            instances = await named_instances(session, [row.id for row in found])
            return [DeploymentView(row, instances.get(row.id, [])) for row in found]

    async def page(
        self, query: DeploymentListQuery, columns: Sequence[InstrumentedAttribute[Any]]
    ) -> tuple[list[RowMapping], NamedInstances, int]:
        """One page of ``columns`` in creation order, their instances, and the total."""
        conditions = []
        if query.status is not None:
            conditions.append(Deployment.status == query.status)
        if query.worker_id is not None:
            conditions.append(
                or_(
                    Deployment.worker_id == query.worker_id,
                    Deployment.id.in_(
                        select(Instance.deployment_id).where(Instance.worker_id == query.worker_id)
                    ),
                )
            )
        async with self._db.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(Deployment).where(*conditions)
            )
            rows = list(
                (
                    await session.execute(
                        select(*columns)
                        .where(*conditions)
                        .order_by(Deployment.created_at, Deployment.id)
                        .offset(query.skip)
                        .limit(query.limit)
                    )
                ).mappings()
            )
            instances = await named_instances(session, [row["id"] for row in rows])
            return rows, instances, total or 0

    async def logs(self, deployment_id: str, lines: int, instance_id: str | None = None) -> str:
        instance = await self.log_source(deployment_id, instance_id)
        assert instance.worker_id is not None
        return await self._fleet.fetch_logs(
            instance.worker_id, instance.id, instance.deployment_id, lines
        )

    async def log_source(self, deployment_id: str, instance_id: str | None) -> Instance:
        """The instance whose log is read: the named one, else the first running,
        else the first placed (503 when none is placed)."""
        view = await self.get(deployment_id)
        placed = [i for i, _ in view.instances if i.worker_id is not None]
        if instance_id is not None:
            found = next((i for i in placed if i.id == instance_id), None)
            if found is None:
                raise NotFound(
                    f"Deployment '{view.row.name}' has no instance '{instance_id}' on a worker"
                )
            return found
        running = [i for i in placed if i.status == DeploymentStatus.RUNNING]
        if not (running or placed):
            raise ServiceUnavailable(f"Deployment '{view.row.name}' is not placed on a worker yet")
        return (running or placed)[0]

    # ------------------------------------------------------------ changes

    async def create(self, spec: DeploymentCreate) -> Deployment:
        """Place, store and book every instance, then command their agents."""
        taken = f"A deployment named '{spec.name}' already exists"
        async with self._placer.lock, self._db.session() as session:
            if await session.scalar(select(Deployment.id).where(Deployment.name == spec.name)):
                raise Conflict(taken)
            row = Deployment(
                id=new_id(),
                name=spec.name,
                backend=spec.backend,
                model=spec.model,
                config=spec.config.to_mapping(),
                replicas=spec.replicas,
                pinned_worker_id=spec.worker_id,
                spec_version=1,
            )
            if spec.worker_id is not None:
                await self._placer.check_pinned(session, spec.worker_id)
            session.add(row)
            instances = await self._placer.place(session, row, spec.replicas, {}, strict=True)
            aggregate.apply(row, instances)
            await self._placer.commit_booked(session, instances, taken)
        self._placer.send(row, instances)
        self.kick(row.id)
        return row

    async def patch(self, deployment_id: str, change: DeploymentPatch) -> DeploymentView:
        """Scale, roll to a new spec, or apply serving keys in place."""
        async with self._placer.lock, self._db.session() as session:
            row = await get_deployment(session, deployment_id)
            instances = await instance_rows(session, row.id)
            old_config = EngineConfig.from_mapping(row.config)
            config = change.config if change.config is not None else old_config
            if change.image is not None:
                config = EngineConfig.from_mapping({**config.to_mapping(), "image": change.image})
            model = change.model if change.model is not None else row.model
            rolled = (
                model != row.model or config.container_mapping() != old_config.container_mapping()
            )
            row.config = config.to_mapping()
            resend: list[Instance] = []
            if rolled:
                row.model = model
                row.spec_version += 1
                row.rollout_error = ""
            else:
                # Serving keys only: every instance takes them in place.
                serving = {k: v for k, v in row.config.items() if k in SERVING_KEYS}
                for instance in instances:
                    kept = EngineConfig.from_mapping(instance.config).container_mapping()
                    instance.config = {**kept, **serving}
                    resend.append(instance)
            added: list[Instance] = []
            if change.replicas is not None:
                row.replicas = change.replicas
                if not row.stopped:
                    live = [i for i in instances if not i.draining]
                    added = await self._placer.place(
                        session, row, change.replicas - len(live), per_worker(live), strict=True
                    )
            aggregate.apply(row, [*instances, *added])
            await self._placer.commit_booked(session, added)
        self._placer.send(row, [*resend, *added])
        self.kick(row.id)
        return await self.get(deployment_id)

    async def stop(self, deployment_id: str) -> DeploymentView:
        """Keep the deployment; drain and remove every instance (GPUs released)."""
        async with self._placer.lock, self._db.session() as session:
            row = await get_deployment(session, deployment_id)
            row.stopped = True
            await aggregate.refresh(session, row)
            await session.commit()
        self._fleet.publish_deployment(row)
        self.kick(row.id)
        return await self.get(deployment_id)

    async def start(self, deployment_id: str) -> DeploymentView:
        """Place ``replicas`` instances again (all or none: ``409``)."""
        async with self._placer.lock, self._db.session() as session:
            row = await get_deployment(session, deployment_id)
            added: list[Instance] = []
            if row.stopped:
                if row.pinned_worker_id is not None:
                    await self._placer.check_pinned(session, row.pinned_worker_id)
                live = [i for i in await instance_rows(session, row.id) if not i.draining]
                row.stopped = False
                added = await self._placer.place(
                    session, row, row.replicas - len(live), per_worker(live), strict=True
                )
                aggregate.apply(row, [*live, *added])
                await self._placer.commit_booked(session, added)
        self._placer.send(row, added)
        self.kick(row.id)
        return await self.get(deployment_id)

    async def delete(self, deployment_id: str) -> None:
        """Delete the row now (the name is free at once); its instances drain,
        then stop and are removed."""
        async with self._placer.lock, self._db.session() as session:
            row = await get_deployment(session, deployment_id)
            instances = await instance_rows(session, row.id)
            timeout = EngineConfig.from_mapping(row.config).effective_drain_timeout
            await session.execute(delete(Instance).where(Instance.deployment_id == row.id))
            await session.delete(row)
            await session.commit()
        self._fleet.publish_deleted(deployment_id)
        self._fleet.changed()  # the gateway forgets the name before the drains end
        for instance in instances:
            self._drainer.drain(
                instance.id, instance.worker_id, deployment_id, timeout, row_gone=True
            )
