"""The known workers as placement sees them: each connected agent's
``WorkerCandidate``, and the rank and capacity index over them (``index``).

Guarantees:
* A worker's candidate is rebuilt (and its index entries with it) only when
  its session brings a new GPU list (by identity), other labels, another name
  or another port range; otherwise the cached one is returned.
* ``online`` rebuilds its id → candidate map only when the set of sessions
  changed since the last call (checked by identity, at C speed): a session's
  GPUs and labels never change.
* ``shortlist`` yields the online workers that might take a demand, best rank
  under the policy first; a worker it leaves out cannot take it. The exact
  check is ``placement``'s.
* After ``reindex(worker_id)`` the worker's index entries reflect its book in
  the ledger; the scheduler reindexes on every booking and release. A worker
  not seen online since start is indexed when it connects.

Concurrency: synchronous, on the controller's event loop; the scheduler calls
it under the deployment service's placement lock. Never reads the store.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from controller.scheduler.capacity import EPSILON, Demand
from controller.scheduler.decision import WorkerCandidate
from controller.scheduler.index import MAX_INDEXED_COUNT, CapEntry, WorkerIndex
from controller.scheduler.ledger import Ledger, PortRange
from controller.scheduler.placement import Policy


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

    @property
    def labels(self) -> Mapping[str, str]:
        """The agent's labels (``--label key=value``), matched by ``worker_selector``."""
        ...


class Candidates:
    """The candidate cache and rank index of one scheduler, over its ledger."""

    def __init__(self, policy: Policy, ports: PortRange, ledger: Ledger) -> None:
        self._policy = policy
        # The controller's engine port range, for agents that declared none.
        self._ports = ports
        self._ledger = ledger
        # worker id → (the session's GPU list it was built from, its labels,
        # candidate): rebuilt only when a session brings a new list or labels.
        self._known: dict[str, tuple[list[dict[str, Any]], dict[str, str], WorkerCandidate]] = {}
        # The known workers by rank and by capacity (``index``).
        self._index = WorkerIndex(policy)
        # The sessions of the last decision and their candidates.
        self._online: tuple[tuple[LiveWorker, ...], dict[str, WorkerCandidate]] = ((), {})

    def of(self, worker: LiveWorker) -> WorkerCandidate:
        """Placement's view of a connected worker, cached per session."""
        known = self._known.get(worker.worker_id)
        declared = worker.engine_ports
        ports = PortRange(*declared) if declared else self._ports
        if (
            known is None
            or known[0] is not worker.gpu_devices
            or known[1] != worker.labels
            or known[2].name != worker.name
            or known[2].ports != ports
        ):
            gpus = tuple(sorted(int(d["index"]) for d in worker.gpu_devices))
            labels = dict(worker.labels)
            candidate = WorkerCandidate(
                worker.worker_id, worker.name, gpus, ports, tuple(sorted(labels.items()))
            )
            known = (worker.gpu_devices, labels, candidate)
            self._known[worker.worker_id] = known
            self.reindex(worker.worker_id)
        return known[2]

    def online(self, sessions: Iterable[LiveWorker]) -> dict[str, WorkerCandidate]:
        """Worker id → candidate for the ``sessions``; the last map while they
        are the same sessions as last time."""
        current = tuple(sessions)
        last = self._online
        if len(last[0]) == len(current) and all(map(operator.is_, current, last[0])):
            return last[1]
        candidates = {worker.worker_id: self.of(worker) for worker in current}
        self._online = (current, candidates)
        return candidates

    def ports_of(self, worker_id: str) -> PortRange:
        """The host ports the worker's engines get: the range its agent declared
        in its last Hello, else the controller's."""
        known = self._known.get(worker_id)
        if known is not None and known[2].ports is not None:
            return known[2].ports
        return self._ports

    def reindex(self, worker_id: str) -> None:
        """Bring the worker's index entries up to its book in the ledger."""
        known = self._known.get(worker_id)
        if known is None:
            return  # not seen online since start; indexed when it connects
        self._index.update(known[2], self._ledger.book_or_empty(worker_id))

    def shortlist(
        self, demand: Demand, candidates: dict[str, WorkerCandidate]
    ) -> Iterator[WorkerCandidate]:
        """The ``candidates`` (``online``'s map) that might fit, best rank first."""
        index = self._index
        need = demand.fraction - EPSILON
        if demand.pinned is not None and demand.pinned[0] < MAX_INDEXED_COUNT:
            return self._ranked(index.gpu_fitting(demand.pinned[0], need), candidates)
        if demand.pinned is None and 0 < demand.count <= MAX_INDEXED_COUNT:
            return self._ranked(index.fitting(demand.count, need), candidates)
        start, stop = self._policy.window(index.order, demand.min_worker_free)
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
        # Usually the best one is taken; order the rest only if it is not, and
        # lazily (a batch of replicas takes a few of them).
        best = min(keys)
        yield candidates[best[-1]]
        keys.remove(best)
        heapq.heapify(keys)
        while keys:
            yield candidates[heapq.heappop(keys)[-1]]
