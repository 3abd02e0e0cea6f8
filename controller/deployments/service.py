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

Concurrency: runs on the controller's event loop. The ledger
(``controller.scheduler``) is mutated only under this service's lock, or
before the API serves (``Scheduler.load``). Drains are tasks owned by the
service (``_drains``), cancelled and awaited by ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import RowMapping, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from controller.deployments.plan import InstanceView, Plan, plan
from controller.fleet import Fleet
from controller.scheduler import ReplicaRefusal, ReplicaRequest, Scheduler, explain_replicas
from controller.schemas import DeploymentCreate, DeploymentListQuery, DeploymentPatch
from controller.store import Database, Deployment, Instance, Worker, aggregate, commit_or_conflict
from controller.store.models import new_id
from controller.store.timeutil import utcnow
from shared.engines import SERVING_KEYS, EngineConfig
from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.status import DeploymentStatus, WorkerStatus

log = logging.getLogger("lmstack.deployments")

# A full reconciliation pass at least this often (deadlines such as
# ``reschedule_after`` are checked by it); changes trigger one at once.
RECONCILE_SECONDS = 5.0


class Drains(Protocol):
    """The gateway's in-flight counts (``controller.gateway``)."""

    async def idle(self, instance_id: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until no request is in flight to the instance, at most ``timeout``
        seconds; whether it became idle."""
        ...


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
        clock: Callable[[], float] = time.monotonic,
        reconcile_seconds: float = RECONCILE_SECONDS,
    ) -> None:
        self._db = db
        self._fleet = fleet
        self._scheduler = scheduler
        self._placement_lock = asyncio.Lock()
        self._drains_by: Drains | None = None
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._clock = clock
        self._reconcile_seconds = reconcile_seconds
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._stopping = asyncio.Event()
        # Why the last pass could not place some of a deployment's instances.
        self._unplaced: dict[str, str] = {}
        fleet.subscribe(self._wake.set)
        fleet.subscribe_instances(self.kick)

    def use_drains(self, drains: Drains) -> None:
        """Where drains wait for in-flight requests (the gateway, entered later)."""
        self._drains_by = drains

    def kick(self, deployment_id: str | None = None) -> None:
        """Reconcile ``deployment_id`` (all when None) soon."""
        if deployment_id is not None:
            self._dirty.add(deployment_id)
        self._wake.set()

    # ------------------------------------------------------------ reads

    async def get(self, deployment_id: str) -> DeploymentView:
        async with self._db.session() as session:
            row = await _get(session, deployment_id)
            instances = await _instances(session, [row.id])
            return DeploymentView(row, instances.get(row.id, []))

    async def page(
        self, query: DeploymentListQuery, columns: Sequence[InstrumentedAttribute[Any]]
    ) -> tuple[list[RowMapping], dict[str, list[tuple[Instance, str | None]]], int]:
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
            instances = await _instances(session, [row["id"] for row in rows])
            return rows, instances, total or 0

    async def logs(self, deployment_id: str, lines: int, instance_id: str | None = None) -> str:
        instance = await self._instance_for(deployment_id, instance_id)
        assert instance.worker_id is not None
        return await self._fleet.fetch_logs(
            instance.worker_id, instance.id, instance.deployment_id, lines
        )

    async def _instance_for(self, deployment_id: str, instance_id: str | None) -> Instance:
        """The named instance, else the first running one, else the first placed."""
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

    async def log_source(self, deployment_id: str, instance_id: str | None) -> Instance:
        """The instance whose log a follow reads (see ``_instance_for``)."""
        return await self._instance_for(deployment_id, instance_id)

    # ------------------------------------------------------------ changes

    async def create(self, spec: DeploymentCreate) -> Deployment:
        """Place, store and book every instance, then command their agents."""
        taken = f"A deployment named '{spec.name}' already exists"
        async with self._placement_lock, self._db.session() as session:
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
                await self._check_pinned(session, spec.worker_id)
            session.add(row)
            instances = await self._place(session, row, spec.replicas, {}, strict=True)
            aggregate.apply(row, instances)
            await self._commit_booked(session, instances, taken)
        self._send(row, instances)
        self.kick(row.id)
        return row

    async def patch(self, deployment_id: str, change: DeploymentPatch) -> DeploymentView:
        """Scale, roll to a new spec, or apply serving keys in place."""
        async with self._placement_lock, self._db.session() as session:
            row = await _get(session, deployment_id)
            instances = await _rows(session, row.id)
            fields = change.model_fields_set
            old_config = EngineConfig.from_mapping(row.config)
            config = change.config if "config" in fields and change.config else old_config
            if "image" in fields:
                config = config.model_copy(update={"image": change.image})
                config = EngineConfig.model_validate(config.to_mapping())
            model = change.model if "model" in fields and change.model else row.model
            rolled = model != row.model or config.container_mapping() != (
                old_config.container_mapping()
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
            if "replicas" in fields and change.replicas is not None:
                row.replicas = change.replicas
                if not row.stopped:
                    live = [i for i in instances if not i.draining]
                    missing = change.replicas - len(live)
                    if missing > 0:
                        added = await self._place(
                            session, row, missing, _per_worker(live), strict=True
                        )
            aggregate.apply(row, [*instances, *added])
            await self._commit_booked(session, added)
        self._send(row, [*resend, *added])
        self.kick(row.id)
        return await self.get(deployment_id)

    async def stop(self, deployment_id: str) -> DeploymentView:
        """Keep the deployment; drain and remove every instance (GPUs released)."""
        async with self._placement_lock, self._db.session() as session:
            row = await _get(session, deployment_id)
            row.stopped = True
            await aggregate.refresh(session, row)
            await session.commit()
        self._fleet.publish_deployment(row)
        self.kick(row.id)
        return await self.get(deployment_id)

    async def start(self, deployment_id: str) -> DeploymentView:
        """Place ``replicas`` instances again (all or none: ``409``)."""
        async with self._placement_lock, self._db.session() as session:
            row = await _get(session, deployment_id)
            added: list[Instance] = []
            if row.stopped:
                if row.pinned_worker_id is not None:
                    await self._check_pinned(session, row.pinned_worker_id)
                live = [i for i in await _rows(session, row.id) if not i.draining]
                row.stopped = False
                added = await self._place(
                    session, row, row.replicas - len(live), _per_worker(live), strict=True
                )
                aggregate.apply(row, [*live, *added])
                await self._commit_booked(session, added)
        self._send(row, added)
        self.kick(row.id)
        return await self.get(deployment_id)

    async def delete(self, deployment_id: str) -> None:
        """Delete the row now (the name is free at once); its instances drain,
        then stop and are removed."""
        async with self._placement_lock, self._db.session() as session:
            row = await _get(session, deployment_id)
            instances = await _rows(session, row.id)
            timeout = EngineConfig.from_mapping(row.config).effective_drain_timeout
            await session.execute(delete(Instance).where(Instance.deployment_id == row.id))
            await session.delete(row)
            await session.commit()
        self._fleet.publish_deleted(deployment_id)
        self._fleet.changed()  # the gateway forgets the name before the drains end
        for instance in instances:
            self._drain(instance.id, instance.worker_id, deployment_id, timeout, row_gone=True)

    # ------------------------------------------------------------ placing

    async def _check_pinned(self, session: AsyncSession, worker_id: str) -> None:
        worker = await session.get(Worker, worker_id)
        if worker is None:
            raise NotFound(f"Worker '{worker_id}' not found")
        if worker.status != WorkerStatus.ONLINE or not self._fleet.is_connected(worker.id):
            raise ServiceUnavailable(f"Worker '{worker.name}' is offline")

    async def _place(
        self,
        session: AsyncSession,
        row: Deployment,
        count: int,
        existing: dict[str, int],
        *,
        strict: bool,
        template: tuple[str, dict[str, Any], int] | None = None,
    ) -> list[Instance]:
        """Place and book ``count`` new instances of ``row`` (added to
        ``session``). ``strict``: all or ``Conflict``; else as many as fit (the
        reason for the rest is kept for the status). Called under the lock; the
        caller commits (``_commit_booked``)."""
        if count <= 0:
            return []
        model, config_map, version = template or (row.model, row.config, row.spec_version)
        config = EngineConfig.from_mapping(config_map)
        pinned = None
        if row.pinned_worker_id is not None:
            if not self._fleet.is_connected(row.pinned_worker_id):
                if strict:
                    raise ServiceUnavailable(f"Worker '{row.pinned_worker_id}' is offline")
                self._unplaced[row.id] = "its worker is offline"
                return []
            pinned = self._fleet.session(row.pinned_worker_id)
        wanted = count
        while True:
            ids = tuple(new_id() for _ in range(wanted))
            request = ReplicaRequest(row.name, row.backend, config, ids, existing)
            result = self._scheduler.place_replicas(request, self._fleet.live_sessions(), pinned)
            if not isinstance(result, ReplicaRefusal):
                break
            if strict or result.fitted <= 0:
                conflict = explain_replicas(result, await self._offline_names(session))
                if strict:
                    raise conflict
                self._unplaced[row.id] = conflict.detail
                return []
            self._unplaced[row.id] = explain_replicas(result).detail
            wanted = result.fitted
        if wanted == count:
            self._unplaced.pop(row.id, None)
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

    async def _commit_booked(
        self, session: AsyncSession, instances: Sequence[Instance], taken: str = ""
    ) -> None:
        """Commit; the bookings of ``instances`` are given back if it fails."""
        try:
            await commit_or_conflict(session, taken or "conflicting change")
        except BaseException:
            for instance in instances:
                self._scheduler.release(instance.id)
            raise

    def _send(self, row: Deployment, instances: Sequence[Instance]) -> None:
        self._fleet.publish_deployment(row)
        for instance in instances:
            self._fleet.deploy(instance, row.name, row.backend)

    # ------------------------------------------------------------ draining

    def _drain(
        self,
        instance_id: str,
        worker_id: str | None,
        deployment_id: str,
        timeout: float,
        *,
        row_gone: bool = False,
    ) -> None:
        """Start the instance's drain (once): wait for its in-flight requests,
        then remove it. The task is the service's (``close`` ends it)."""
        if instance_id in self._drains or self._stopping.is_set():
            return
        task = asyncio.create_task(
            self._drain_then_remove(instance_id, worker_id, deployment_id, timeout, row_gone),
            name=f"drain {instance_id}",
        )
        self._drains[instance_id] = task
        task.add_done_callback(lambda _: self._drains.pop(instance_id, None))

    async def _drain_then_remove(
        self,
        instance_id: str,
        worker_id: str | None,
        deployment_id: str,
        timeout: float,  # noqa: ASYNC109 (the drain's bound, handed to the gateway)
        row_gone: bool,
    ) -> None:
        try:
            drains = self._drains_by
            if drains is not None and timeout > 0 and not await drains.idle(instance_id, timeout):
                log.info("instance %s: drain timed out after %gs", instance_id, timeout)
            async with self._placement_lock:
                if not row_gone:
                    async with self._db.session() as session:
                        await session.execute(delete(Instance).where(Instance.id == instance_id))
                        row = await session.get(Deployment, deployment_id)
                        if row is not None:
                            await aggregate.refresh(session, row)
                        await session.commit()
                    if row is not None:
                        self._fleet.publish_deployment(row)
                self._scheduler.release(instance_id)
            self._fleet.stop(worker_id, instance_id, deployment_id)
            log.info("instance %s of %s stopped and removed", instance_id, deployment_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Kept draining in the store: the next pass starts it again.
            log.exception("removing instance %s failed; will retry", instance_id)
        finally:
            self.kick(deployment_id)

    # ------------------------------------------------------------ reconciling

    async def run(self) -> None:
        """Reconcile until ``shut_down``: at once after a change, and a full
        pass every ``reconcile_seconds``."""
        full = True
        while not self._stopping.is_set():
            try:
                await self.reconcile(None if full else self._take_dirty())
            except Exception:
                log.exception("reconciliation pass failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_or_stop(), self._reconcile_seconds)
            full = not self._wake.is_set() and not self._dirty
            self._wake.clear()

    async def _wake_or_stop(self) -> None:
        waits = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _take_dirty(self) -> set[str] | None:
        dirty, self._dirty = self._dirty, set()
        return dirty or None

    def shut_down(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Cancel the drains in progress (they restart from the store)."""
        self._stopping.set()
        tasks = list(self._drains.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconcile(self, only: set[str] | None = None) -> None:
        """One pass over every deployment (or ``only`` those)."""
        now = utcnow()
        async with self._placement_lock, self._db.session() as session:
            query = select(Deployment)
            if only is not None:
                query = query.where(Deployment.id.in_(sorted(only)))
            deployments = list(await session.scalars(query.order_by(Deployment.created_at)))
            if not deployments:
                return
            ids = [d.id for d in deployments]
            instance_query = select(Instance).order_by(Instance.created_at, Instance.id)
            if only is not None:
                instance_query = instance_query.where(Instance.deployment_id.in_(ids))
            by_deployment: dict[str, list[Instance]] = {}
            for instance in await session.scalars(instance_query):
                by_deployment.setdefault(instance.deployment_id, []).append(instance)
            offline = {
                wid: since
                for wid, since in await session.execute(select(Worker.id, Worker.offline_since))
                if not self._fleet.is_connected(wid)
            }
            sends: list[tuple[Deployment, list[Instance]]] = []
            drains: list[tuple[Instance, float]] = []
            booked: list[Instance] = []
            for row in deployments:
                instances = by_deployment.get(row.id, [])
                added, drained = await self._reconcile_one(session, row, instances, offline, now)
                booked.extend(added)
                sends.append((row, added))
                timeout = EngineConfig.from_mapping(row.config).effective_drain_timeout
                drains.extend(
                    (i, timeout) for i in [*drained, *(i for i in instances if i.draining)]
                )
                note = self._unplaced.get(row.id, "") if aggregate.desired_replicas(row) else ""
                aggregate.apply(row, [*instances, *added], note=note)
            await self._commit_booked(session, booked)
        changed = False
        for row, added in sends:
            if added:
                changed = True
            self._send(row, added)
        for instance, timeout in drains:
            if instance.id not in self._drains:
                changed = True
                self._drain(instance.id, instance.worker_id, instance.deployment_id, timeout)
        if changed:
            self._fleet.changed()

    async def _reconcile_one(
        self,
        session: AsyncSession,
        row: Deployment,
        instances: list[Instance],
        offline: dict[str, Any],
        now: Any,
    ) -> tuple[list[Instance], list[Instance]]:
        """Apply the pass's plan to one deployment: (placed, newly draining)."""
        grace = EngineConfig.from_mapping(row.config).effective_reschedule_after

        def lost(instance: Instance) -> bool:
            if instance.worker_id is None:
                return True
            if instance.worker_id not in offline or grace <= 0:
                return False
            since = offline[instance.worker_id]
            return since is not None and now - since >= timedelta(seconds=grace)

        views = [
            InstanceView(
                id=i.id, spec_version=i.spec_version, status=i.status, created_at=i.created_at,
                draining=i.draining, lost=lost(i), status_message=i.status_message,
            )
            for i in instances
        ]  # fmt: skip
        decided: Plan = plan(
            aggregate.desired_replicas(row), row.spec_version, views,
            rollout_halted=bool(row.rollout_error),
        )  # fmt: skip
        if decided.idle:
            return [], []
        by_id = {i.id: i for i in instances}
        if decided.halt is not None:
            row.rollout_error = decided.halt
            log.warning("deployment %s: rolling update halted: %s", row.name, decided.halt)
        added: list[Instance] = []
        if decided.place:
            live = [
                i for i, v in zip(instances, views, strict=True) if not v.draining and not v.lost
            ]
            template = None
            if decided.template_old:
                newest = max(
                    (i for i in live if i.spec_version != row.spec_version),
                    key=lambda i: i.spec_version,
                )
                template = (newest.model, dict(newest.config), newest.spec_version)
            added = await self._place(
                session, row, decided.place, _per_worker(live), strict=False, template=template
            )
            if not added and decided.replace is not None:
                decided.drain.append(decided.replace)  # no room to surge: replace one
        drained = []
        for instance_id in decided.drain:
            instance = by_id[instance_id]
            if not instance.draining:
                instance.draining = True
                drained.append(instance)
                log.info("deployment %s: draining instance %s", row.name, instance_id)
        return added, drained


def _per_worker(instances: Sequence[Instance]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for instance in instances:
        if instance.worker_id is not None:
            counts[instance.worker_id] = counts.get(instance.worker_id, 0) + 1
    return counts


async def _get(session: AsyncSession, deployment_id: str) -> Deployment:
    row = await session.get(Deployment, deployment_id)
    if row is None:
        raise NotFound(f"Deployment '{deployment_id}' not found")
    return row


async def _rows(session: AsyncSession, deployment_id: str) -> list[Instance]:
    return list(
        await session.scalars(
            select(Instance)
            .where(Instance.deployment_id == deployment_id)
            .order_by(Instance.created_at, Instance.id)
        )
    )


async def _instances(
    session: AsyncSession, deployment_ids: Sequence[str]
) -> dict[str, list[tuple[Instance, str | None]]]:
    """Each deployment's instances in creation order, with their worker's name."""
    if not deployment_ids:
        return {}
    rows = await session.execute(
        select(Instance, Worker.name)
        .outerjoin(Worker, Worker.id == Instance.worker_id)
        .where(Instance.deployment_id.in_(list(deployment_ids)))
        .order_by(Instance.created_at, Instance.id)
    )
    found: dict[str, list[tuple[Instance, str | None]]] = {}
    for instance, worker_name in rows:
        found.setdefault(instance.deployment_id, []).append((instance, worker_name))
    return found
