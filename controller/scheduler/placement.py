"""Placement: which worker, which GPUs and which host port a new instance gets.

An instance is one replica of a deployment (one engine container); this module
decides one at a time, ``replicas`` places a deployment's batch of them.

Pure and synchronous: the inputs are the candidate workers (online ones, with
their GPU indices and the port range their agent declared), the ledger of
reservations and the controller's port range for workers that declared none;
nothing here does I/O or keeps state, so it is tested directly and benchmarked
without a server.

Guarantees:
* A placement never lifts any GPU's reservation above 1.0 and never hands out a
  host port the ledger holds on that worker, nor one outside the worker's range
  (the caller books the placement in the same ledger before anyone else may
  decide; see ``service``).
* Deterministic: equal inputs give equal answers; ties go to the worker that
  sorts first by name, then id.
* When nothing fits, the answer is a ``Refusal`` (``refusal``) that can say
  for every worker considered why, with numbers.

Worker labels: a request with a selector (``config.worker_selector``) fits
only workers whose labels hold every one of its pairs, named or not.

Policies (``POLICIES``, chosen by ``LMSTACK_PLACEMENT_POLICY``):
* ``binpack`` (default): the worker with the *least* free GPU capacity that can
  take it, and on it the GPUs with the least free capacity that still fit.
  Keeps whole GPUs and whole workers free for the next large model.
* ``spread``: the worker with the *most* free GPU capacity, and on it the
  emptiest GPUs. Spreads contention and the blast radius of a failing host.
Ties: more instances first (binpack) or fewer (spread), then name, then id.

An instance on a worker without GPUs reserves none. Automatic placement puts
a GPU instance only on workers with GPUs; naming a GPU-less worker
(``worker_id``) runs it CPU-only there, and ``config.gpu_count: 0`` asks for CPU
only anywhere.

Cost: one pass over the candidates at most, O(log GPUs) per worker for the
usual one (GPUs numbered 0..n-1) from its book's summaries. A worker's rank
does not depend on the request, so the scheduler keeps the workers in rank
order (``candidates``) and stops at the first that fits. The GPUs are chosen
once, for the winner, and reasons are worded only for the workers a refusal
names.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any, Protocol

from controller.scheduler.capacity import EPSILON
from controller.scheduler.decision import Placement, PlacementRequest, WorkerCandidate
from controller.scheduler.ledger import Ledger, PortRange, WorkerBook
from controller.scheduler.refusal import Refusal

# (free fraction, GPU index)
FreeGpu = tuple[float, int]


# ---------------------------------------------------------------- policies


class Policy(Protocol):
    name: str

    def order(self, gpu: FreeGpu) -> tuple[float, int]:
        """Sort key of a worker's GPUs that fit: the first ``count`` are taken."""

    def rank(self, worker_free: float, instances: int) -> tuple[float, ...]:
        """Sort key of a worker (before name and id): the lowest feasible wins.
        It does not depend on the request, so workers can be kept in rank order
        and the first one that fits is the answer (``candidates`` does)."""

    def window(self, order: list[tuple[Any, ...]], min_free: float) -> tuple[int, int]:
        """The slice of ``order`` (rank keys, sorted) holding every worker with
        at least ``min_free`` free capacity: the only ones that can fit."""


class Binpack:
    name = "binpack"

    def order(self, gpu: FreeGpu) -> tuple[float, int]:
        return gpu  # tightest fit first

    def rank(self, worker_free: float, instances: int) -> tuple[float, ...]:
        # The fullest worker that fits, so empty workers stay empty.
        return (round(worker_free, 6), -instances)

    def window(self, order: list[tuple[Any, ...]], min_free: float) -> tuple[int, int]:
        return bisect_left(order, (round(min_free, 6),)), len(order)


class Spread:
    name = "spread"

    def order(self, gpu: FreeGpu) -> tuple[float, int]:
        return (-gpu[0], gpu[1])  # emptiest first

    def rank(self, worker_free: float, instances: int) -> tuple[float, ...]:
        # The emptiest worker, then the one running the fewest instances.
        return (-round(worker_free, 6), instances)

    def window(self, order: list[tuple[Any, ...]], min_free: float) -> tuple[int, int]:
        return 0, bisect_right(order, (-round(min_free, 6), math.inf))


POLICIES: dict[str, Policy] = {policy.name: policy for policy in (Binpack(), Spread())}


# ---------------------------------------------------------------- deciding


def place(
    request: PlacementRequest,
    workers: Iterable[WorkerCandidate],
    ledger: Ledger,
    ports: PortRange,
    policy: Policy,
    *,
    in_rank_order: bool = False,
) -> Placement | Refusal:
    """The best placement under ``policy``, or a ``Refusal`` that can say why.

    With ``in_rank_order`` the caller promises ``workers`` come sorted by
    ``rank_key``, and the first that fits is taken without looking further."""
    best_key: tuple[Any, ...] | None = None
    best: tuple[WorkerCandidate, WorkerBook] | None = None
    rejected: list[WorkerCandidate] = []
    for worker in workers:
        book = ledger.book_or_empty(worker.id)
        if not takes(request, worker, book, ports, policy):
            rejected.append(worker)
            continue
        if in_rank_order:
            best = (worker, book)
            break
        key = rank_key(worker, book, policy)
        if best_key is None or key < best_key:
            best_key, best = key, (worker, book)
    if best is None:
        return Refusal(request, tuple(rejected), ledger, ports)
    return placement_on(request, *best, ports, policy)


def takes(
    request: PlacementRequest,
    worker: WorkerCandidate,
    book: WorkerBook,
    ports: PortRange,
    policy: Policy,
) -> bool:
    """Whether ``worker`` (whose reservations are ``book``) can take the request."""
    return (
        request.selector <= worker.label_set
        and book.has_free_port(worker.ports or ports)
        and _fits(request, worker, book, policy)
    )


def placement_on(
    request: PlacementRequest,
    worker: WorkerCandidate,
    book: WorkerBook,
    ports: PortRange,
    policy: Policy,
) -> Placement:
    """The GPUs and port the request gets on ``worker``, which ``takes`` it."""
    gpus = _pick(request, worker, book, policy)
    port = book.next_free_port(worker.ports or ports)
    assert gpus is not None and port is not None  # the winner passed both checks
    fraction = request.demand.fraction if gpus else 0.0
    return Placement(worker.id, worker.name, gpus, fraction, port)


def rank_key(worker: WorkerCandidate, book: WorkerBook, policy: Policy) -> tuple[Any, ...]:
    """Where ``worker`` stands under ``policy``; unique (it ends with the id)."""
    return (*policy.rank(worker_free(worker, book), book.instances), worker.name, worker.id)


def worker_free(worker: WorkerCandidate, book: WorkerBook) -> float:
    """The worker's free GPU capacity: the sum of each GPU's unreserved fraction."""
    if worker.dense and book.max_index < len(worker.gpus):
        return len(worker.gpus) - len(book.partial_frees) + book.partial_free_sum
    return sum(max(0.0, book.free(i)) for i in worker.gpus)


def _fits(
    request: PlacementRequest, worker: WorkerCandidate, book: WorkerBook, policy: Policy
) -> bool:
    """Whether the instance fits ``worker``; O(log GPUs) for the usual dense,
    unpinned case, from the book's summaries."""
    demand = request.demand
    n = len(worker.gpus)
    if n and worker.dense and book.max_index < n and not demand.cpu_only:
        need = demand.fraction - EPSILON
        if demand.pinned is not None:
            return all(i < n and book.free(i) >= need for i in demand.pinned)
        partial = book.partial_frees
        return n - bisect_left(partial, need) >= demand.count
    return _pick(request, worker, book, policy) is not None


def _pick(
    request: PlacementRequest, worker: WorkerCandidate, book: WorkerBook, policy: Policy
) -> tuple[int, ...] | None:
    """The GPUs the instance takes on ``worker`` (``()``: none), or ``None``."""
    demand = request.demand
    if demand.cpu_only:
        return ()
    if not worker.gpus:
        return () if request.explicit_worker and demand.pinned is None else None
    need = demand.fraction - EPSILON
    if demand.pinned is not None:
        fits = all(i in worker.gpus and book.free(i) >= need for i in demand.pinned)
        return tuple(sorted(demand.pinned)) if fits else None
    fitting = [(book.free(i), i) for i in worker.gpus if book.free(i) >= need]
    if len(fitting) < demand.count:
        return None
    return tuple(sorted(i for _, i in sorted(fitting, key=policy.order)[: demand.count]))
