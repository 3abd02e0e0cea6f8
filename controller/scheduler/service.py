"""The scheduler: the pure placement core bound to the controller's ledger.

Guarantees:
* A decision reads only the ledger and never awaits. The caller owns the
  transaction around it: the deployment service (``controller.deployments``)
  books a decision (``book``) before its first await under its placement
  lock, so no second decision can see the resources free, and gives them back
  (``release``) when the commit fails.
* Deleting a deployment releases its GPU fractions and host port.
* A worker's engine ports come from the range its agent declared in Hello
  (``--engine-port-range``, stored on the worker row), else from the
  controller's ``LMSTACK_ENGINE_PORT_MIN``-``_MAX``; ``book`` never books a
  port outside it. A deployment placed before its agent changed range keeps
  its stored port (the ledger rebuilt by ``load`` holds it) until re-created.
* After a restart the ledger is rebuilt from the store (``load``) before the
  API serves: every deployment assigned to a worker holds its stored
  ``gpu_indices`` (at the fraction ``shared.engines.reservation`` gives for its backend
  and config) and its port, whatever its status, until it is deleted.

Speed: a decision never reads the store. Workers are kept sorted by their rank
under the policy (it depends on their free capacity, not on the request), so a
decision walks them from the best and stops at the first that fits.

Concurrency: runs on the controller's event loop; every method is synchronous
except ``load``. Mutations (``book``, ``release``, ``load``, and the rank
index a decision refreshes) happen under the deployment service's placement
lock or before the server accepts requests.

Scope: one controller process owns placement. Two controllers over one
database would each keep their own ledger and could double-book.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from controller.scheduler.capacity import EPSILON, Demand, demand_for
from controller.scheduler.index import MAX_INDEXED_COUNT, CapEntry, WorkerIndex
from controller.scheduler.ledger import Allocation, Ledger, LedgerConflict, PortRange, WorkerBook
from controller.scheduler.placement import (
    POLICIES,
    Placement,
    PlacementRequest,
    Refusal,
    WorkerCandidate,
    place,
)
from controller.store import Database, Deployment
from shared.engines import EngineConfig, reservation
from shared.errors import ConfigError
from shared.settings import ControllerSettings

log = logging.getLogger("lmstack.scheduler")


class LiveWorker(Protocol):
    """What placement reads of a connected agent (``controller.fleet.AgentSession``)."""

    @property
    def worker_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def gpu_devices(self) -> list[dict[str, Any]]: ...

    @property
    def engine_ports(self) -> tuple[int, int] | None:
        """The host port range the agent declared; ``None``: the controller's applies."""
        ...


@dataclass(frozen=True)
class GpuUsage:
    """One GPU's bookings: the fraction reserved and by which deployments."""

    reserved: float
    deployments: tuple[str, ...]


class Scheduler:
    def __init__(self, policy: str, ports: PortRange) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"unknown placement policy {policy!r} (known: {', '.join(POLICIES)})")
        self.policy = POLICIES[policy]
        self.ports = ports
        self.ledger = Ledger()
        # worker id → (the session's GPU list it was built from, candidate):
        # rebuilt only when a new session brings a new list.
        self._known: dict[str, tuple[list[dict[str, Any]], WorkerCandidate]] = {}
        # The known workers by rank and by capacity (``index``).
        self._index = WorkerIndex(self.policy)
        # The sessions of the last decision and their candidates.
        self._online: tuple[tuple[LiveWorker, ...], dict[str, WorkerCandidate]] = ((), {})

    # ------------------------------------------------------------ state

    async def load(self, db: Database) -> None:
        """Rebuild the ledger from every deployment assigned to a worker."""
        async with db.session() as session:
            rows = await session.execute(
                select(
                    Deployment.id,
                    Deployment.worker_id,
                    Deployment.backend,
                    Deployment.config,
                    Deployment.gpu_indices,
                    Deployment.port,
                ).where(Deployment.worker_id.is_not(None))
            )
            for row in rows:
                self._restore(
                    row.id,
                    row.worker_id,
                    backend=row.backend,
                    config=row.config,
                    gpu_indices=row.gpu_indices,
                    port=row.port,
                )
        log.info("placement ledger rebuilt: %d deployments", len(self.ledger))

    def _restore(
        self,
        deployment_id: str,
        worker_id: str,
        *,
        backend: str,
        config: Mapping[str, Any] | None,
        gpu_indices: Sequence[int] | None,
        port: int | None,
    ) -> None:
        try:
            fraction = reservation(backend, EngineConfig.from_mapping(config)).fraction
        except ConfigError:
            fraction = 1.0  # an engine we no longer know: assume it holds whole GPUs
        indices = tuple(int(i) for i in gpu_indices or ())
        allocation = Allocation(deployment_id, worker_id, indices, fraction, port)
        try:
            self.ledger.add(allocation)
        except LedgerConflict as exc:
            log.warning("stored deployment %s: %s; its port is not booked", deployment_id, exc)
            self.ledger.add(Allocation(deployment_id, worker_id, indices, fraction, None))

    def book(self, deployment_id: str, placement: Placement) -> None:
        """Book a decision; ``LedgerConflict`` if its port is held or outside the
        worker's range."""
        self.ledger.add(
            Allocation(
                deployment_id,
                placement.worker_id,
                placement.gpu_indices,
                placement.fraction,
                placement.port,
            ),
            self.ports_of(placement.worker_id),
        )
        self._reindex(placement.worker_id)

    def ports_of(self, worker_id: str) -> PortRange:
        """The host ports the worker's engines get: the range its agent declared
        in its last Hello, else the controller's."""
        known = self._known.get(worker_id)
        if known is not None and known[1].ports is not None:
            return known[1].ports
        return self.ports

    def release(self, deployment_id: str) -> Allocation | None:
        allocation = self.ledger.remove(deployment_id)
        if allocation is not None:
            self._reindex(allocation.worker_id)
        return allocation

    def _reindex(self, worker_id: str) -> None:
        known = self._known.get(worker_id)
        if known is None:
            return  # not seen online since start; indexed when it connects
        self._index.update(known[1], self.ledger.book(worker_id) or WorkerBook())

    # ------------------------------------------------------------ deciding

    def candidate(self, worker: LiveWorker) -> WorkerCandidate:
        """Placement's view of a connected worker, cached per session."""
        known = self._known.get(worker.worker_id)
        declared = worker.engine_ports
        ports = PortRange(*declared) if declared else self.ports
        if (
            known is None
            or known[0] is not worker.gpu_devices
            or known[1].name != worker.name
            or known[1].ports != ports
        ):
            gpus = tuple(sorted(int(d["index"]) for d in worker.gpu_devices))
            candidate = WorkerCandidate(worker.worker_id, worker.name, gpus, ports)
            known = (worker.gpu_devices, candidate)
            self._known[worker.worker_id] = known
            self._reindex(worker.worker_id)
        return known[1]

    def _candidates(self, online: Iterable[LiveWorker]) -> dict[str, WorkerCandidate]:
        """Worker id → candidate for the ``online`` sessions; rebuilt only when
        the set of sessions changed since the last decision (checked by
        identity, at C speed), since a session's GPUs never change."""
        sessions = tuple(online)
        last = self._online
        if len(last[0]) == len(sessions) and all(map(operator.is_, sessions, last[0])):
            return last[1]
        candidates = {worker.worker_id: self.candidate(worker) for worker in sessions}
        self._online = (sessions, candidates)
        return candidates

    def place_anywhere(
        self, name: str, backend: str, config: EngineConfig, online: Iterable[LiveWorker]
    ) -> Placement | Refusal:
        """The best of the ``online`` workers under the policy. The caller books
        the placement (or explains the refusal) under the placement lock."""
        candidates = self._candidates(online)
        request = PlacementRequest(name, demand_for(backend, config))
        result = place(
            request, self._shortlist(request.demand, candidates), self.ledger, self.ports,
            self.policy, in_rank_order=True,
        )  # fmt: skip
        if isinstance(result, Refusal):
            # The shortlist skipped workers unseen; the refusal names them all.
            result = Refusal(request, tuple(candidates.values()), self.ledger, self.ports)
        return result

    def _shortlist(
        self, demand: Demand, candidates: dict[str, WorkerCandidate]
    ) -> Iterator[WorkerCandidate]:
        """The online workers that might fit, best rank first."""
        index = self._index
        need = demand.fraction - EPSILON
        if demand.pinned is not None and demand.pinned[0] < MAX_INDEXED_COUNT:
            return self._ranked(index.gpu_fitting(demand.pinned[0], need), candidates)
        if demand.pinned is None and 0 < demand.count <= MAX_INDEXED_COUNT:
            return self._ranked(index.fitting(demand.count, need), candidates)
        start, stop = self.policy.window(index.order, demand.min_worker_free)
        return (
            candidate
            for key in itertools.islice(index.order, start, stop)
            if (candidate := candidates.get(key[-1])) is not None
        )

    def _ranked(
        self, fitting: list[CapEntry], candidates: dict[str, WorkerCandidate]
    ) -> Iterator[WorkerCandidate]:
        keys = [self._index.rank_of(wid) for _, wid in fitting if wid in candidates]
        if not keys:
            return
        # Usually the best one is taken; sort the rest only if it is not.
        best = min(keys)
        yield candidates[best[-1]]
        for key in sorted(keys):
            if key is not best:
                yield candidates[key[-1]]

    def place_on(
        self, name: str, backend: str, config: EngineConfig, worker: LiveWorker
    ) -> Placement | Refusal:
        """GPUs and a port on the worker the user named."""
        request = PlacementRequest(name, demand_for(backend, config), explicit_worker=True)
        return place(request, [self.candidate(worker)], self.ledger, self.ports, self.policy)

    # ------------------------------------------------------------ views

    def gpu_usage(self, worker_id: str, index: int) -> GpuUsage:
        book = self.ledger.book(worker_id)
        if book is None:
            return GpuUsage(0.0, ())
        holders = book.holders.get(index, {})
        return GpuUsage(round(book.reserved.get(index, 0.0), 4), tuple(holders))


async def build_scheduler(settings: ControllerSettings, db: Database) -> Scheduler:
    """The controller's scheduler, its ledger rebuilt from the store."""
    if settings.engine_port_min > settings.engine_port_max:
        raise ConfigError(
            f"engine_port_min {settings.engine_port_min} > engine_port_max "
            f"{settings.engine_port_max}"
        )
    ports = PortRange(settings.engine_port_min, settings.engine_port_max)
    scheduler = Scheduler(settings.placement_policy, ports)
    await scheduler.load(db)
    return scheduler
