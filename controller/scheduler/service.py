"""The scheduler: the pure placement core bound to the controller's ledger.

The ledger books *instances* (the replicas of deployments, one engine
container each) under their ids: ``place_replicas`` places and books a batch of
one deployment's new instances (spread over workers first, see ``replicas``);
``place_anywhere``/``place_on`` decide for one, which the caller books itself.

Guarantees:
* A decision reads only the ledger and never awaits. The caller owns the
  transaction around it: the deployment service (``controller.deployments``)
  books a decision (``place_replicas``, or ``book``) before its first await
  under its placement lock, so no second decision can see the resources free,
  and gives them back (``release`` of each instance id) when the commit fails.
* ``place_replicas`` is all or nothing: it books every instance of the batch,
  or none and answers a ``ReplicaRefusal`` (how many fit, why not the rest).
* Releasing an instance (stopped, rescheduled, deleted) frees its GPU
  fractions and host port.
* A worker's engine ports come from the range its agent declared in Hello
  (``--engine-port-range``, stored on the worker row), else from the
  controller's ``LMSTACK_ENGINE_PORT_MIN``-``_MAX``; ``book`` never books a
  port outside it. An instance placed before its agent changed range keeps
  its stored port (the ledger rebuilt by ``load`` holds it) until replaced.
* ``config.worker_selector`` restricts every decision to the workers whose
  agent's labels (``--label``) hold all its pairs.
* After a restart the ledger is rebuilt from the store (``load``, see
  ``restore``) before the API serves: every instance assigned to a worker
  holds its stored ``gpu_indices`` (at the fraction
  ``shared.engines.reservation`` gives for its deployment's backend and its own
  config) and its port, whatever its status, until it is released.

Speed: a decision never reads the store. Workers are kept sorted by their rank
under the policy (it depends on their free capacity, not on the request;
``candidates`` keeps them, reindexing a worker on every booking and release),
so a decision walks them from the best and stops at the first that fits; a
batch of replicas walks them once (``replicas``).

Concurrency: runs on the controller's event loop; every method is synchronous
except ``load``. Mutations (``book``, ``place_replicas``, ``release``,
``load``, and the rank index a decision refreshes) happen under the deployment
service's placement lock or before the server accepts requests.

Scope: one controller process owns placement. Two controllers over one
database would each keep their own ledger and could double-book.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.scheduler.candidates import Candidates, LiveWorker
from controller.scheduler.capacity import demand_for
from controller.scheduler.decision import Placement, PlacementRequest, WorkerCandidate
from controller.scheduler.ledger import Allocation, Ledger, LedgerConflict, PortRange
from controller.scheduler.placement import POLICIES, place
from controller.scheduler.refusal import MAX_EXPLAINED, Refusal
from controller.scheduler.replicas import (
    ReplicaChooser,
    ReplicaRefusal,
    ReplicaRequest,
    selector_of,
)
from controller.scheduler.restore import restore_ledger
from controller.store import Database
from shared.engines import EngineConfig
from shared.errors import ConfigError
from shared.settings import ControllerSettings


@dataclass(frozen=True)
class GpuUsage:
    """One GPU's bookings: the fraction reserved and by which instances."""

    reserved: float
    instances: tuple[str, ...]


class Scheduler:
    def __init__(self, policy: str, ports: PortRange) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"unknown placement policy {policy!r} (known: {', '.join(POLICIES)})")
        self.policy = POLICIES[policy]
        self.ports = ports
        self.ledger = Ledger()
        # The known workers' candidates and their rank index over the ledger.
        self._workers = Candidates(self.policy, ports, self.ledger)

    # ------------------------------------------------------------ state

    async def load(self, db: Database) -> None:
        """Rebuild the ledger from every instance assigned to a worker (``restore``)."""
        await restore_ledger(self.ledger, db)

    def book(self, instance_id: str, placement: Placement) -> None:
        """Book a decision for one instance; ``LedgerConflict`` if the instance
        is booked already, or the port is held or outside the worker's range."""
        self._add(instance_id, placement)
        self._workers.reindex(placement.worker_id)

    def _add(self, instance_id: str, placement: Placement) -> None:
        """Book in the ledger only; the caller reindexes the worker."""
        self.ledger.add(
            Allocation(
                instance_id,
                placement.worker_id,
                placement.gpu_indices,
                placement.fraction,
                placement.port,
            ),
            self.ports_of(placement.worker_id),
        )

    def ports_of(self, worker_id: str) -> PortRange:
        """The host ports the worker's engines get: the range its agent declared
        in its last Hello, else the controller's."""
        return self._workers.ports_of(worker_id)

    def release(self, instance_id: str) -> Allocation | None:
        """Give back what the instance holds; ``None`` if it held nothing."""
        allocation = self.ledger.remove(instance_id)
        if allocation is not None:
            self._workers.reindex(allocation.worker_id)
        return allocation

    # ------------------------------------------------------------ deciding

    def candidate(self, worker: LiveWorker) -> WorkerCandidate:
        """Placement's view of a connected worker, cached per session."""
        return self._workers.of(worker)

    def place_anywhere(
        self, name: str, backend: str, config: EngineConfig, online: Iterable[LiveWorker]
    ) -> Placement | Refusal:
        """The best of the ``online`` workers under the policy (those matching
        ``config.worker_selector``) for one instance. The caller books the
        placement (or explains the refusal) under the placement lock."""
        candidates = self._workers.online(online)
        request = PlacementRequest(name, demand_for(backend, config), selector=selector_of(config))
        result = place(
            request, self._workers.shortlist(request.demand, candidates), self.ledger, self.ports,
            self.policy, in_rank_order=True,
        )  # fmt: skip
        if isinstance(result, Refusal):
            # The shortlist skipped workers unseen; the refusal names them all.
            result = Refusal(request, tuple(candidates.values()), self.ledger, self.ports)
        return result

    def place_on(
        self, name: str, backend: str, config: EngineConfig, worker: LiveWorker
    ) -> Placement | Refusal:
        """GPUs and a port for one instance on the worker the user named (if
        its labels match ``config.worker_selector``)."""
        request = PlacementRequest(
            name, demand_for(backend, config), explicit_worker=True, selector=selector_of(config)
        )
        return place(request, [self.candidate(worker)], self.ledger, self.ports, self.policy)

    def place_replicas(
        self,
        request: ReplicaRequest,
        online: Iterable[LiveWorker],
        pinned: LiveWorker | None = None,
    ) -> list[Placement] | ReplicaRefusal:
        """Place and book every instance of ``request`` (in ``instance_ids``
        order, each under its id), spread over the ``online`` workers, or all on
        ``pinned``; or book none and say how many fit and why not the rest.
        ``LedgerConflict`` (nothing booked) if an id is booked already."""
        ids = request.instance_ids
        if len(set(ids)) != len(ids) or any(self.ledger.allocation(i) for i in ids):
            raise LedgerConflict(f"instances of '{request.name}' are booked already: {ids}")
        chooser, considered = self._chooser(request, online, pinned)
        placed: list[Placement] = []
        try:
            for instance_id in ids:
                placement = chooser.next()
                if placement is None:
                    return self._refuse(request, chooser.request, considered, placed)
                self._add(instance_id, placement)
                placed.append(placement)
            return placed
        except BaseException:
            self._unbook(ids[: len(placed)])
            raise
        finally:
            # Once for the batch: the chooser walks the index while it books.
            for worker_id in {p.worker_id for p in placed}:
                self._workers.reindex(worker_id)

    def _chooser(
        self, request: ReplicaRequest, online: Iterable[LiveWorker], pinned: LiveWorker | None
    ) -> tuple[ReplicaChooser, tuple[WorkerCandidate, ...]]:
        """The batch's chooser over the online workers (or the pinned one), and
        the workers it considers."""
        demand = demand_for(request.backend, request.config)
        decision = PlacementRequest(
            request.name,
            demand,
            explicit_worker=pinned is not None,
            selector=selector_of(request.config),
        )
        if pinned is None:
            candidates = self._workers.online(online)
            ranked = self._workers.shortlist(demand, candidates)
        else:
            worker = self.candidate(pinned)
            candidates, ranked = {worker.id: worker}, iter([worker])
        chooser = ReplicaChooser(
            decision,
            ranked,
            candidates=candidates,
            ledger=self.ledger,
            ports=self.ports,
            policy=self.policy,
            existing=request.existing,
        )
        return chooser, tuple(candidates.values())

    def _refuse(
        self,
        request: ReplicaRequest,
        decision: PlacementRequest,
        considered: tuple[WorkerCandidate, ...],
        placed: list[Placement],
    ) -> ReplicaRefusal:
        """Word why ``considered`` cannot take one more (while the ledger holds
        ``placed``), then unbook ``placed``."""
        refusal = Refusal(decision, considered, self.ledger, self.ports)
        rejections = tuple(refusal.rejections(MAX_EXPLAINED))
        self._unbook(request.instance_ids[: len(placed)])
        return ReplicaRefusal(
            request,
            decision.demand,
            tuple(placed),
            rejections,
            len(considered),
            pinned=decision.explicit_worker,
        )

    def _unbook(self, instance_ids: Sequence[str]) -> None:
        """Undo the bookings of ``instance_ids`` (booked in that order)."""
        for instance_id in reversed(instance_ids):
            self.ledger.remove(instance_id, undo=True)

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
