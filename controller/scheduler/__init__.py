"""The placement scheduler: picks a worker, GPU indices and a host port for each
new deployment, explains every rejection, and never over-commits a GPU.

* ``capacity``: what a deployment asks for (the shared reservation rule).
* ``ledger``: in-memory reservations per worker, GPU and port.
* ``placement``: the pure decision, its policies and its explanations.
* ``service``: ``Scheduler``, the ledger's owner, rebuilt from the store.
"""

from controller.scheduler.capacity import Demand, demand_for
from controller.scheduler.ledger import (
    Allocation,
    Ledger,
    LedgerConflict,
    PortRange,
    WorkerBook,
)
from controller.scheduler.placement import (
    POLICIES,
    Placement,
    PlacementRequest,
    Policy,
    Refusal,
    Rejection,
    Unplaceable,
    WorkerCandidate,
    explain,
    place,
)
from controller.scheduler.service import GpuUsage, LiveWorker, Scheduler, build_scheduler

__all__ = [
    "POLICIES",
    "Allocation",
    "Demand",
    "GpuUsage",
    "Ledger",
    "LedgerConflict",
    "LiveWorker",
    "Placement",
    "PlacementRequest",
    "Policy",
    "PortRange",
    "Refusal",
    "Rejection",
    "Scheduler",
    "Unplaceable",
    "WorkerBook",
    "WorkerCandidate",
    "build_scheduler",
    "demand_for",
    "explain",
    "place",
]
