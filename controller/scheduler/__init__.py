"""The placement scheduler: picks a worker, GPU indices and a host port for each
new instance (replica) of a deployment, spreads a deployment's instances over
workers, honours worker labels, explains every rejection, and never
over-commits a GPU.

* ``capacity``: what an instance asks for (the shared reservation rule).
* ``ledger``: in-memory reservations per worker, GPU and port, by instance id.
* ``placement``: the pure decision for one instance, its policies and its explanations.
* ``replicas``: a batch of one deployment's instances: spread, and its refusal.
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
from controller.scheduler.replicas import ReplicaRefusal, ReplicaRequest, explain_replicas
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
    "ReplicaRefusal",
    "ReplicaRequest",
    "Scheduler",
    "Unplaceable",
    "WorkerBook",
    "WorkerCandidate",
    "build_scheduler",
    "demand_for",
    "explain",
    "explain_replicas",
    "place",
]
