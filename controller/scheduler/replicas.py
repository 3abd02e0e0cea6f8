"""Placing the replicas of one deployment: a batch of new instances at once.

``Scheduler.place_replicas`` (``service``) books the batch or nothing; this
module holds what it decides with and what it answers.

Guarantees:
* Spread first: each new instance goes to a worker with the *fewest* instances
  of its deployment (those in ``ReplicaRequest.existing`` plus the ones placed
  earlier in the batch) that can take it, and among those to the best under the
  placement policy (``placement.POLICIES``). So while a worker without one can
  take an instance, no worker gets a second; several share a worker only when
  the others are full, filtered out or gone.
* ``config.worker_selector`` restricts every instance to the workers whose
  labels hold all of its pairs, a pinned worker included.
* A pinned worker (the user's ``worker_id``) takes every instance, as many as fit.
* Deterministic and greedy: the first ``fitted`` choices of a refused batch are
  exactly the choices a batch of ``fitted`` instances gets from the same state,
  so asking again for ``ReplicaRefusal.fitted`` succeeds.
* A refusal is worded when it is made (the ledger still holds the instances
  that fit, so each worker's reason describes the state the next instance
  met), for at most ``MAX_EXPLAINED`` workers.

Cost: one walk over the workers that might fit (the rank and capacity index,
see ``index``) serves the whole batch, because booking an instance changes only
its own worker, which then has one and is passed over; the workers already
holding one are checked directly, O(their number) per instance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.scheduler.capacity import Demand
from controller.scheduler.decision import Placement, PlacementRequest, WorkerCandidate
from controller.scheduler.ledger import Ledger, PortRange, WorkerBook
from controller.scheduler.placement import Policy, placement_on, rank_key, takes
from controller.scheduler.refusal import MAX_EXPLAINED, Rejection, Unplaceable, listing
from shared.engines import EngineConfig


@dataclass(frozen=True)
class ReplicaRequest:
    """New instances of one deployment, each to be placed and booked."""

    # The deployment's name, for explanations.
    name: str
    backend: str
    # ``worker_selector`` restricts the workers by their labels.
    config: EngineConfig
    # The ids of the new instances, one placement each, booked under them.
    instance_ids: tuple[str, ...]
    # Worker id → instances of this deployment already on it (spread counts them).
    existing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaRefusal:
    """Not every instance fits; nothing of the batch stays booked."""

    request: ReplicaRequest
    demand: Demand
    # Where the first ``fitted`` instances would have gone (not booked).
    placed: tuple[Placement, ...]
    # Why the workers considered could not take the next one: the first
    # ``MAX_EXPLAINED`` by name, worded at refusal time.
    rejections: tuple[Rejection, ...]
    # How many workers were considered (all of them rejected the next one).
    rejected: int
    # The user named the worker: ``rejections`` is about that one alone.
    pinned: bool = False

    @property
    def requested(self) -> int:
        return len(self.request.instance_ids)

    @property
    def fitted(self) -> int:
        """How many instances fit (greedily, in the order they are placed)."""
        return len(self.placed)


def selector_of(config: EngineConfig) -> frozenset[tuple[str, str]]:
    """``config.worker_selector`` as the label pairs a worker must carry."""
    return frozenset((config.worker_selector or {}).items())


class ReplicaChooser:
    """Chooses the worker of each next instance of one batch.

    ``ranked``: the workers that might take one, best rank first (a worker
    missing from it cannot take one at all); ``candidates``: every worker the
    batch may use. The caller books each placement in ``ledger`` before asking
    for the next one, and does not reorder ``ranked`` in between.
    """

    def __init__(
        self,
        request: PlacementRequest,
        ranked: Iterator[WorkerCandidate],
        *,
        candidates: Mapping[str, WorkerCandidate],
        ledger: Ledger,
        ports: PortRange,
        policy: Policy,
        existing: Mapping[str, int],
    ) -> None:
        self.request = request
        self._ranked = ranked
        self._candidates = candidates
        self._ledger = ledger
        self._ports = ports
        self._policy = policy
        # Worker id → instances of the deployment on it; only workers with some.
        self._counts = {wid: n for wid, n in existing.items() if n > 0}

    def next(self) -> Placement | None:
        """Where the next instance goes (counted as there), or ``None``: nowhere."""
        chosen = self._unused() or self._least_used()
        if chosen is None:
            return None
        worker, book = chosen
        self._counts[worker.id] = self._counts.get(worker.id, 0) + 1
        return placement_on(self.request, worker, book, self._ports, self._policy)

    def _unused(self) -> tuple[WorkerCandidate, WorkerBook] | None:
        """The best-ranked worker without an instance that takes one. Resumes
        the walk where the last call stopped: a worker passed over stays unable
        (bookings only take capacity away) or already has one."""
        for worker in self._ranked:
            if worker.id in self._counts:
                continue
            book = self._ledger.book_or_empty(worker.id)
            if takes(self.request, worker, book, self._ports, self._policy):
                return worker, book
        return None

    def _least_used(self) -> tuple[WorkerCandidate, WorkerBook] | None:
        """Among the workers with instances, one with the fewest that takes one
        more, best-ranked first."""
        best_key: tuple[Any, ...] | None = None
        best: tuple[WorkerCandidate, WorkerBook] | None = None
        for worker_id, count in self._counts.items():
            worker = self._candidates.get(worker_id)
            if worker is None:
                continue
            book = self._ledger.book_or_empty(worker.id)
            if not takes(self.request, worker, book, self._ports, self._policy):
                continue
            key = (count, *rank_key(worker, book, self._policy))
            if best_key is None or key < best_key:
                best_key, best = key, (worker, book)
        return best


def explain_replicas(refusal: ReplicaRefusal, offline_names: Sequence[str] = ()) -> Unplaceable:
    """The 409 for a batch that did not fit: how many did and where, and why
    each worker (the first ``MAX_EXPLAINED`` by name) could not take the next
    one, the ``offline_names`` listed as offline. A single instance is worded
    as ``refusal.explain`` words it. For a pinned worker ``offline_names``
    do not matter and are left out."""
    request, n, fitted = refusal.request, refusal.requested, refusal.fitted
    what = f"'{request.name}' ({refusal.demand.describe()})"
    offline = () if refusal.pinned else offline_names
    named, listed = listing(refusal.rejections, refusal.rejected, offline)
    if refusal.pinned and named:
        only = named[0]
        if fitted:
            detail = (
                f"Only {fitted} of {n} replicas of {what} fit on worker "
                f"'{only.worker_name}'; the rest do not: {only.reason}"
            )
        else:
            subject = what if n == 1 else f"any of the {n} replicas of {what}"
            detail = f"Worker '{only.worker_name}' cannot place {subject}: {only.reason}"
        return Unplaceable(detail, named)
    if fitted:
        detail = (
            f"Only {fitted} of {n} replicas of {what} fit, on {_workers(refusal.placed)}; "
            f"no worker can take the rest: {listed}"
        )
    else:
        subject = what if n == 1 else f"any of the {n} replicas of {what}"
        detail = f"No worker can place {subject}: {listed}"
    return Unplaceable(detail, named)


def _workers(placed: Sequence[Placement]) -> str:
    """``gpu-01 (2), gpu-02``: the workers by name, with more than one counted."""
    counts: dict[str, int] = {}
    for placement in placed:
        counts[placement.worker_name] = counts.get(placement.worker_name, 0) + 1
    names = sorted(counts)
    shown = [name if counts[name] == 1 else f"{name} ({counts[name]})" for name in names]
    text = ", ".join(shown[:MAX_EXPLAINED])
    if len(names) > MAX_EXPLAINED:
        text += f" and {len(names) - MAX_EXPLAINED} more workers"
    return text
