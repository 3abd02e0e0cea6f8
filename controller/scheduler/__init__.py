"""The placement scheduler: picks a worker, GPU indices and a host port for each
new instance (replica) of a deployment, spreads a deployment's instances over
workers, honours worker labels, explains every rejection, and never
over-commits a GPU.

* ``capacity``: what an instance asks for (the shared reservation rule).
* ``ledger``: in-memory reservations per worker, GPU and port, by instance id.
* ``decision``: the terms of one decision: candidate workers, request, placement.
* ``placement``: the pure decision for one instance, and its policies.
* ``refusal``: what a decision answers when nothing fits, and its wording.
* ``replicas``: a batch of one deployment's instances: spread, and its refusal.
* ``index``: the known workers by rank and by free capacity.
* ``candidates``: the connected workers as placement sees them, and their index.
* ``restore``: the ledger rebuilt from the store after a restart.
* ``service``: ``Scheduler``, the ledger's owner, binding all of the above.
"""

from controller.scheduler.candidates import LiveWorker
from controller.scheduler.capacity import Demand, demand_for
from controller.scheduler.decision import Placement, PlacementRequest, WorkerCandidate
from controller.scheduler.ledger import (
    Allocation,
    Ledger,
    LedgerConflict,
    PortRange,
    WorkerBook,
)
from controller.scheduler.placement import POLICIES, Policy, place
from controller.scheduler.refusal import Refusal, Rejection, Unplaceable, explain
from controller.scheduler.replicas import ReplicaRefusal, ReplicaRequest, explain_replicas
from controller.scheduler.service import GpuUsage, Scheduler, build_scheduler

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
