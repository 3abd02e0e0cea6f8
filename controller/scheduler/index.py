"""Indexes over the known workers, so a decision looks only at workers that
might fit rather than at the whole fleet.

* ``order``: every indexed worker's ``rank_key``, sorted. The rank does not
  depend on the request, so the first worker in this order that fits is the
  policy's answer, and ``Policy.window`` cuts off the workers with too little
  free capacity in total.
* per GPU count ``c`` (1..``MAX_INDEXED_COUNT``): the workers sorted by their
  ``c``-th largest free fraction. A worker fits ``c`` GPUs of ``f`` each
  exactly when that value is at least ``f``, so one bisection yields the
  workers that fit an unpinned request.
* per GPU index ``i`` (below ``MAX_INDEXED_COUNT``): the workers sorted by the
  free fraction of their GPU ``i``, for requests that pin GPUs.

Invariant: after ``update(worker, book)`` every entry of the worker reflects
that book; callers update on every booking, release and new GPU list. A batch
of replicas (``Scheduler.place_replicas``) updates its workers once, at its
end: meanwhile their entries show more free than their books, which only
widens a shortlist (the exact check in ``placement`` decides), and the walk
over ``order`` stays valid because nothing moves in it.
Not thread-safe; used on the event loop under the placement lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from typing import Any

from controller.scheduler.decision import WorkerCandidate
from controller.scheduler.ledger import WorkerBook
from controller.scheduler.placement import Policy, rank_key

# GPU counts indexed by capacity; larger requests fall back to the rank scan.
MAX_INDEXED_COUNT = 8

CapEntry = tuple[float, str]  # (c-th largest free fraction, worker id)


class WorkerIndex:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self.order: list[tuple[Any, ...]] = []
        self._rank: dict[str, tuple[Any, ...]] = {}
        self._caps: list[list[CapEntry]] = [[] for _ in range(MAX_INDEXED_COUNT)]
        self._cap_entries: dict[str, list[CapEntry]] = {}
        self._gpus: list[list[CapEntry]] = [[] for _ in range(MAX_INDEXED_COUNT)]
        self._gpu_entries: dict[str, list[tuple[int, CapEntry]]] = {}

    def update(self, worker: WorkerCandidate, book: WorkerBook) -> None:
        self._remove(worker.id)
        key = rank_key(worker, book, self._policy)
        insort(self.order, key)
        self._rank[worker.id] = key
        entries = [(cap, worker.id) for cap in _caps(worker, book)]
        for count, entry in enumerate(entries):
            insort(self._caps[count], entry)
        self._cap_entries[worker.id] = entries
        gpu_entries = [(i, (free, worker.id)) for i, free in _gpu_frees(worker, book)]
        for index, entry in gpu_entries:
            insort(self._gpus[index], entry)
        self._gpu_entries[worker.id] = gpu_entries

    def _remove(self, worker_id: str) -> None:
        old = self._rank.pop(worker_id, None)
        if old is not None:
            del self.order[bisect_left(self.order, old)]
        for count, entry in enumerate(self._cap_entries.pop(worker_id, [])):
            caps = self._caps[count]
            del caps[bisect_left(caps, entry)]
        for index, entry in self._gpu_entries.pop(worker_id, []):
            gpus = self._gpus[index]
            del gpus[bisect_left(gpus, entry)]

    def rank_of(self, worker_id: str) -> tuple[Any, ...]:
        return self._rank[worker_id]

    def fitting(self, count: int, need: float) -> list[CapEntry]:
        """The workers with ``count`` GPUs of at least ``need`` free each
        (``count`` at most ``MAX_INDEXED_COUNT``); may include offline ones."""
        caps = self._caps[count - 1]
        return caps[bisect_left(caps, (need, "")) :]

    def gpu_fitting(self, index: int, need: float) -> list[CapEntry]:
        """The workers whose GPU ``index`` (below ``MAX_INDEXED_COUNT``) has at
        least ``need`` free; may include offline ones."""
        gpus = self._gpus[index]
        return gpus[bisect_left(gpus, (need, "")) :]


def _caps(worker: WorkerCandidate, book: WorkerBook) -> list[float]:
    """The 1st..nth largest free fraction of the worker's GPUs (at most
    ``MAX_INDEXED_COUNT``). A worker the summaries do not describe exactly
    (GPUs not numbered 0..n-1) is listed as fitting anything, so the exact
    check in ``placement`` decides."""
    n = min(len(worker.gpus), MAX_INDEXED_COUNT)
    if not (worker.dense and book.max_index < len(worker.gpus)):
        return [math.inf] * n
    whole = len(worker.gpus) - len(book.partial_frees)
    descending = [1.0] * min(whole, n) + book.partial_frees[::-1]
    return descending[:n]


def _gpu_frees(worker: WorkerCandidate, book: WorkerBook) -> list[tuple[int, float]]:
    """(index, free fraction) of the worker's GPUs below ``MAX_INDEXED_COUNT``;
    as in ``_caps``, a worker not described exactly fits anything."""
    exact = worker.dense and book.max_index < len(worker.gpus)
    return [
        (i, book.free(i) if exact else math.inf)
        for i in (worker.gpus if exact else range(MAX_INDEXED_COUNT))
        if i < MAX_INDEXED_COUNT
    ]
