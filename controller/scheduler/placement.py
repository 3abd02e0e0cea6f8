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
* When nothing fits, the ``Refusal`` says for every worker considered why, with
  numbers ("only 1 GPU has 0.90 free, 2 needed (best other 0.55)").

Worker labels: a request with a selector (``config.worker_selector``) fits
only workers whose labels hold every one of its pairs, named or not; a worker
rejected for that says which pairs it lacks.

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
does not depend on the request, so ``service`` keeps the workers in rank order
and stops at the first that fits. The GPUs are chosen once, for the winner, and
reasons are worded only for the workers a refusal names.
"""

from __future__ import annotations

import heapq
import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.scheduler.capacity import EPSILON, Demand
from controller.scheduler.ledger import Ledger, PortRange, WorkerBook
from shared.errors import Conflict
from shared.status import WorkerStatus

# At most this many workers are named in a refusal; the rest are counted.
MAX_EXPLAINED = 25

_EMPTY_BOOK = WorkerBook()

# (free fraction, GPU index)
FreeGpu = tuple[float, int]


@dataclass(frozen=True)
class WorkerCandidate:
    """An online worker as placement sees it."""

    id: str
    name: str
    gpus: tuple[int, ...]
    # The host ports its engines may get (the agent's declared range); ``None``:
    # the range ``place`` is given.
    ports: PortRange | None = None
    # Its agent's labels (``--label key=value``), sorted by key.
    labels: tuple[tuple[str, str], ...] = ()
    # GPUs numbered 0..n-1, the usual case: the book's summaries then suffice.
    dense: bool = field(init=False, repr=False, compare=False)
    # ``labels`` as a set, for the selector's subset test.
    label_set: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense", self.gpus == tuple(range(len(self.gpus))))
        object.__setattr__(self, "label_set", frozenset(self.labels))


@dataclass(frozen=True)
class PlacementRequest:
    name: str
    demand: Demand
    # The user named the worker: a worker without GPUs then runs it CPU-only.
    explicit_worker: bool = False
    # ``config.worker_selector``: label pairs the worker must carry, all of them.
    selector: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Placement:
    worker_id: str
    worker_name: str
    gpu_indices: tuple[int, ...]
    # Fraction reserved on each of ``gpu_indices`` (0.0 when there are none).
    fraction: float
    port: int


@dataclass(frozen=True)
class Rejection:
    worker_name: str
    reason: str


@dataclass(frozen=True)
class Refusal:
    """Nothing fits. Reasons are worded only when asked for (``rejections``),
    so refusing on a large fleet costs no more than scanning it. Read it before
    the ledger changes (its caller still holds the placement lock)."""

    request: PlacementRequest
    rejected: tuple[WorkerCandidate, ...]
    ledger: Ledger
    ports: PortRange

    def rejections(self, limit: int | None = None) -> list[Rejection]:
        """Why each rejected worker (the first ``limit`` by name) was rejected."""
        by_name = operator.attrgetter("name", "id")
        ordered = (
            sorted(self.rejected, key=by_name)
            if limit is None
            else heapq.nsmallest(limit, self.rejected, key=by_name)
        )
        return [
            Rejection(
                worker.name,
                _reason(self.request, worker, self._book(worker), worker.ports or self.ports),
            )
            for worker in ordered
        ]

    def _book(self, worker: WorkerCandidate) -> WorkerBook:
        return self.ledger.book(worker.id) or _EMPTY_BOOK


class Unplaceable(Conflict):
    """409: no worker can take the instance (or all the replicas asked for);
    ``detail`` explains each worker, ``rejections`` lists the ones it names."""

    def __init__(self, detail: str, rejections: Sequence[Rejection]) -> None:
        super().__init__(detail)
        self.rejections = tuple(rejections)


# ---------------------------------------------------------------- policies


class Policy(Protocol):
    name: str

    def order(self, gpu: FreeGpu) -> tuple[float, int]:
        """Sort key of a worker's GPUs that fit: the first ``count`` are taken."""

    def rank(self, worker_free: float, instances: int) -> tuple[float, ...]:
        """Sort key of a worker (before name and id): the lowest feasible wins.
        It does not depend on the request, so workers can be kept in rank order
        and the first one that fits is the answer (``service`` does)."""

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
        book = ledger.book(worker.id) or _EMPTY_BOOK
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
        and _has_free_port(book, worker.ports or ports)
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
    port = _lowest_free_port(book, worker.ports or ports)
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


def _has_free_port(book: WorkerBook, ports: PortRange) -> bool:
    # Fewer holders than ports means a free one exists (pigeonhole; holders
    # outside ``ports`` only make that truer); only a nearly full worker pays
    # for the scan.
    return len(book.ports) < ports.size or _lowest_free_port(book, ports) is not None


def _lowest_free_port(book: WorkerBook, ports: PortRange) -> int | None:
    held = book.ports
    for port in range(ports.low, ports.high + 1):
        if port not in held:
            return port
    return None


# ---------------------------------------------------------------- explaining


def explain(refusal: Refusal, offline: Sequence[str] = ()) -> Unplaceable:
    """The 409 for a request nothing could take: every worker considered, and
    the ``offline`` ones, by name with the reason (the first ``MAX_EXPLAINED``)."""
    request = refusal.request
    what = f"'{request.name}' ({request.demand.describe()})"
    named, listed = listing(refusal.rejections(MAX_EXPLAINED), len(refusal.rejected), offline)
    if request.explicit_worker and len(refusal.rejected) + len(offline) == 1:
        only = named[0]
        return Unplaceable(f"Worker '{only.worker_name}' cannot place {what}: {only.reason}", named)
    return Unplaceable(f"No worker can place {what}: {listed}", named)


def listing(
    rejections: Sequence[Rejection], rejected: int, offline: Sequence[str]
) -> tuple[list[Rejection], str]:
    """The first ``MAX_EXPLAINED`` of ``rejections`` (worded for the first of
    ``rejected`` workers by name) and the ``offline`` workers, by name, and
    them in words ("gpu-01: ...; gpu-02: offline; and 3 more workers")."""
    total = rejected + len(offline)
    if total == 0:
        return [], "no worker is registered"
    named = heapq.nsmallest(
        MAX_EXPLAINED,
        [*rejections, *(Rejection(name, WorkerStatus.OFFLINE) for name in offline)],
        key=operator.attrgetter("worker_name"),
    )
    listed = "; ".join(f"{r.worker_name}: {r.reason}" for r in named)
    if total > len(named):
        listed += f"; and {total - len(named)} more workers"
    return named, listed


def _reason(
    request: PlacementRequest, worker: WorkerCandidate, book: WorkerBook, ports: PortRange
) -> str:
    """Why ``worker`` cannot take the request, in words and numbers."""
    demand = request.demand
    if not request.selector <= worker.label_set:
        return _labels_reason(request.selector, worker)
    if not _has_free_port(book, ports):
        return f"no free host port in {ports}"
    if not worker.gpus:
        return "no GPUs (set config.gpu_count to 0 to run CPU-only)"
    if demand.pinned is not None:
        return _pinned_reason(demand, demand.pinned, worker, book)
    if demand.count > len(worker.gpus):
        return _too_few_gpus(demand, len(worker.gpus))
    return _short_of_gpus(demand, [book.free(i) for i in worker.gpus])


def _labels_reason(selector: frozenset[tuple[str, str]], worker: WorkerCandidate) -> str:
    """``labels do not match worker_selector (needs gpu=a100; has gpu=h100)``:
    the pairs it lacks, and what it has under those keys."""
    labels = dict(worker.labels)
    unmet = sorted(selector - worker.label_set)
    has = [f"{k}={labels[k]}" if k in labels else f"no {k} label" for k, _ in unmet]
    needs = ", ".join(f"{k}={v}" for k, v in unmet)
    return f"labels do not match worker_selector (needs {needs}; has {', '.join(has)})"


def _pinned_reason(
    demand: Demand, pinned: tuple[int, ...], worker: WorkerCandidate, book: WorkerBook
) -> str:
    problems = []
    for index in pinned:
        if index not in worker.gpus:
            problems.append(f"GPU {index} does not exist (GPUs {_index_list(worker.gpus)})")
        elif book.free(index) < demand.fraction - EPSILON:
            problems.append(
                f"pinned GPU {index} has {_clamp(book.free(index)):.2f} free, "
                f"{demand.fraction:.2f} needed"
            )
    return "; ".join(problems)


def _short_of_gpus(demand: Demand, free: list[float]) -> str:
    need = demand.fraction - EPSILON
    fitting = sum(1 for f in free if f >= need)
    best = _clamp(max((f for f in free if f < need), default=0.0))
    if fitting == 0:
        return f"no GPU has {demand.fraction:.2f} free (best {best:.2f})"
    gpus = "GPU has" if fitting == 1 else "GPUs have"
    return (
        f"only {fitting} {gpus} {demand.fraction:.2f} free, {demand.count} needed "
        f"(best other {best:.2f})"
    )


def _too_few_gpus(demand: Demand, has: int) -> str:
    if demand.count_source in ("tensor_parallel_size", "gpu_count"):
        return f"{demand.count_source} {demand.count} > {has} GPUs"
    return f"needs {demand.count} GPUs, has {has}"


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _index_list(indices: tuple[int, ...]) -> str:
    if indices == tuple(range(indices[0], indices[0] + len(indices))):
        return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
    return ", ".join(str(i) for i in indices)
