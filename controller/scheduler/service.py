"""The scheduler: the pure placement core bound to the controller's ledger.

Guarantees:
* No over-commit, even under concurrent creates: a decision reads only the
  ledger, and the caller books it (``book``) before its first await, all under
  ``Fleet.placement_lock``, so no second decision can see the resources free.
  A failed commit gives them back (``release``).
* Deleting a deployment releases its GPU fractions and host port.
* After a restart the ledger is rebuilt from the store (``load``) before the
  API serves: every deployment assigned to a worker holds its stored
  ``gpu_indices`` (at the fraction ``shared.reservation`` gives for its backend
  and config) and its port, whatever its status, until it is deleted.

Concurrency: runs on the controller's event loop; every method is synchronous
except ``load``. Mutations (``book``, ``release``, ``load``) happen under
``Fleet.placement_lock`` or before the server accepts requests.

Scope: one controller process owns placement. Two controllers over one
database would each keep their own ledger and could double-book.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from controller.scheduler.capacity import demand_for
from controller.scheduler.ledger import Allocation, Ledger, LedgerConflict
from controller.scheduler.placement import (
    POLICIES,
    Placement,
    PlacementRequest,
    PortRange,
    Rejection,
    WorkerCandidate,
    place,
)
from controller.store import Database, Deployment
from shared.errors import ConfigError
from shared.reservation import gpu_reservation
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
        self._candidates: dict[str, tuple[list[dict[str, Any]], WorkerCandidate]] = {}

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
            fraction = gpu_reservation(backend, config or {}).fraction
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
        self.ledger.add(
            Allocation(
                deployment_id,
                placement.worker_id,
                placement.gpu_indices,
                placement.fraction,
                placement.port,
            )
        )

    def release(self, deployment_id: str) -> Allocation | None:
        return self.ledger.remove(deployment_id)

    # ------------------------------------------------------------ deciding

    def candidates(self, workers: Iterable[LiveWorker]) -> list[WorkerCandidate]:
        """Placement's view of the connected workers, cached per session."""
        out = []
        for worker in workers:
            cached = self._candidates.get(worker.worker_id)
            if (
                cached is None
                or cached[0] is not worker.gpu_devices
                or cached[1].name != worker.name
            ):
                gpus = tuple(sorted(int(d["index"]) for d in worker.gpu_devices))
                cached = (worker.gpu_devices, WorkerCandidate(worker.worker_id, worker.name, gpus))
                self._candidates[worker.worker_id] = cached
            out.append(cached[1])
        return out

    def place(
        self,
        name: str,
        backend: str,
        config: Mapping[str, Any],
        workers: Sequence[WorkerCandidate],
        *,
        explicit_worker: bool = False,
    ) -> tuple[PlacementRequest, Placement | list[Rejection]]:
        request = PlacementRequest(name, demand_for(backend, config), explicit_worker)
        return request, place(request, workers, self.ledger, self.ports, self.policy)

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
