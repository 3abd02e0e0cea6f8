"""Placement: which worker, which GPUs and which host port a new deployment gets.

Pure and synchronous: the inputs are the candidate workers (online ones, with
their GPU indices), the ledger of reservations and the port range; nothing here
does I/O or keeps state, so it is tested directly and benchmarked without a
server.

Guarantees:
* A placement never lifts any GPU's reservation above 1.0 and never hands out a
  host port the ledger holds on that worker (the caller books the placement in
  the same ledger before anyone else may decide; see ``service``).
* Deterministic: equal inputs give equal answers; ties go to the worker that
  sorts first by name, then id.
* When nothing fits, every worker considered gets a ``Rejection`` that says why,
  with numbers ("only 1 GPU with 0.90 free, 2 needed (best other 0.55)").

Policies (``POLICIES``, chosen by ``LMSTACK_PLACEMENT_POLICY``):
* ``binpack`` (default): the GPUs with the *least* free capacity that still fits,
  on the most loaded worker. Keeps whole GPUs and whole workers free for the
  next large model.
* ``spread``: the GPUs with the *most* free capacity, on the least loaded
  worker. Spreads contention and the blast radius of a failing host.

A deployment on a worker without GPUs reserves none. Automatic placement puts
a GPU deployment only on workers with GPUs; naming a GPU-less worker
(``worker_id``) runs it CPU-only there, and ``config.gpu_count: 0`` asks for CPU
only anywhere.

Cost: one pass over the candidates, O(GPUs) each, no sorting of the fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.scheduler.capacity import EPSILON, Demand
from controller.scheduler.ledger import Ledger, WorkerBook
from shared.errors import Conflict

# At most this many workers are named in a rejection; the rest are counted.
MAX_EXPLAINED = 50

_EMPTY_BOOK = WorkerBook()

# (free fraction, GPU index)
FreeGpu = tuple[float, int]


@dataclass(frozen=True)
class WorkerCandidate:
    """An online worker as placement sees it."""

    id: str
    name: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class PlacementRequest:
    name: str
    demand: Demand
    # The user named the worker: a worker without GPUs then runs it CPU-only.
    explicit_worker: bool = False


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


class Unplaceable(Conflict):
    """409: no worker can take the deployment; ``detail`` explains each one."""

    def __init__(self, detail: str, rejections: Sequence[Rejection]) -> None:
        super().__init__(detail)
        self.rejections = tuple(rejections)


# ---------------------------------------------------------------- policies


class Policy(Protocol):
    name: str

    def pick_gpus(self, fitting: list[FreeGpu], count: int) -> list[FreeGpu]:
        """``count`` of the GPUs that fit."""

    def rank(self, chosen_free: float, worker_free: float, deployments: int) -> tuple[float, ...]:
        """Sort key of a feasible worker: the lowest wins."""


class Binpack:
    name = "binpack"

    def pick_gpus(self, fitting: list[FreeGpu], count: int) -> list[FreeGpu]:
        return sorted(fitting)[:count]

    def rank(self, chosen_free: float, worker_free: float, deployments: int) -> tuple[float, ...]:
        # Tightest fit first, then the fuller worker.
        return (chosen_free, worker_free, -deployments)


class Spread:
    name = "spread"

    def pick_gpus(self, fitting: list[FreeGpu], count: int) -> list[FreeGpu]:
        return sorted(fitting, key=lambda gpu: (-gpu[0], gpu[1]))[:count]

    def rank(self, chosen_free: float, worker_free: float, deployments: int) -> tuple[float, ...]:
        # Emptiest GPUs first, then the worker running the fewest deployments.
        return (-chosen_free, deployments, -worker_free)


POLICIES: dict[str, Policy] = {policy.name: policy for policy in (Binpack(), Spread())}


# ---------------------------------------------------------------- deciding


@dataclass(frozen=True)
class _Option:
    rank: tuple[float, ...]
    worker: WorkerCandidate
    gpus: tuple[int, ...]


def place(
    request: PlacementRequest,
    workers: Sequence[WorkerCandidate],
    ledger: Ledger,
    ports: PortRange,
    policy: Policy,
) -> Placement | list[Rejection]:
    """The best placement under ``policy``, or why each worker was rejected."""
    best: _Option | None = None
    rejections: list[Rejection] = []
    for worker in workers:
        book = ledger.book(worker.id) or _EMPTY_BOOK
        fit = _fit(request, worker, book, policy)
        if isinstance(fit, str):
            rejections.append(Rejection(worker.name, fit))
        elif not _has_free_port(book, ports):
            rejections.append(Rejection(worker.name, f"no free host port in {ports}"))
        else:
            option = _option(worker, book, fit, policy)
            if best is None or (option.rank, worker.name, worker.id) < (
                best.rank,
                best.worker.name,
                best.worker.id,
            ):
                best = option
    if best is None:
        return rejections
    book = ledger.book(best.worker.id) or _EMPTY_BOOK
    port = _lowest_free_port(book, ports)
    assert port is not None  # checked by _has_free_port
    fraction = request.demand.fraction if best.gpus else 0.0
    return Placement(best.worker.id, best.worker.name, best.gpus, fraction, port)


def _option(
    worker: WorkerCandidate, book: WorkerBook, gpus: tuple[int, ...], policy: Policy
) -> _Option:
    reserved = book.reserved
    chosen_free = sum(1.0 - reserved.get(i, 0.0) for i in gpus)
    worker_free = sum(max(0.0, 1.0 - reserved.get(i, 0.0)) for i in worker.gpus)
    return _Option(policy.rank(chosen_free, worker_free, book.deployments), worker, gpus)


def _fit(
    request: PlacementRequest, worker: WorkerCandidate, book: WorkerBook, policy: Policy
) -> tuple[int, ...] | str:
    """The GPUs the deployment would take on ``worker``, or why it cannot."""
    demand = request.demand
    if demand.cpu_only:
        return ()
    if not worker.gpus:
        if request.explicit_worker and demand.pinned is None:
            return ()
        return "no GPUs (set config.gpu_count to 0 to run CPU-only)"
    if demand.pinned is not None:
        return _fit_pinned(demand, demand.pinned, worker, book)
    if demand.count > len(worker.gpus):
        return _too_few_gpus(demand, len(worker.gpus))
    reserved = book.reserved
    need = demand.fraction - EPSILON
    free = [(1.0 - reserved.get(i, 0.0), i) for i in worker.gpus]
    fitting = [gpu for gpu in free if gpu[0] >= need]
    if len(fitting) < demand.count:
        return _short_of_gpus(demand, free, len(fitting))
    return tuple(sorted(i for _, i in policy.pick_gpus(fitting, demand.count)))


def _fit_pinned(
    demand: Demand, pinned: tuple[int, ...], worker: WorkerCandidate, book: WorkerBook
) -> tuple[int, ...] | str:
    problems = []
    for index in pinned:
        if index not in worker.gpus:
            problems.append(f"GPU {index} does not exist (GPUs {_index_list(worker.gpus)})")
        elif book.free(index) < demand.fraction - EPSILON:
            problems.append(
                f"pinned GPU {index} has {_clamp(book.free(index)):.2f} free, "
                f"{demand.fraction:.2f} needed"
            )
    return "; ".join(problems) if problems else tuple(sorted(pinned))


def _short_of_gpus(demand: Demand, free: list[FreeGpu], fitting: int) -> str:
    need = demand.fraction - EPSILON
    others = [f for f, _ in free if f < need]
    best = _clamp(max(others, default=0.0))
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


def _has_free_port(book: WorkerBook, ports: PortRange) -> bool:
    # Fewer holders than ports means a free one exists (pigeonhole); only a
    # nearly full worker pays for the scan.
    return len(book.ports) < ports.size or _lowest_free_port(book, ports) is not None


def _lowest_free_port(book: WorkerBook, ports: PortRange) -> int | None:
    held = book.ports
    for port in range(ports.low, ports.high + 1):
        if port not in held:
            return port
    return None


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _index_list(indices: tuple[int, ...]) -> str:
    if indices == tuple(range(indices[0], indices[0] + len(indices))):
        return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])
    return ", ".join(str(i) for i in indices)


# ---------------------------------------------------------------- explaining


def explain(
    request: PlacementRequest,
    rejections: Sequence[Rejection],
    offline: Sequence[str] = (),
) -> Unplaceable:
    """The 409 for a request nothing could take, naming every worker and why."""
    everyone = sorted(
        [*rejections, *(Rejection(name, "offline") for name in offline)],
        key=lambda r: r.worker_name,
    )
    what = f"'{request.name}' ({request.demand.describe()})"
    if request.explicit_worker and len(everyone) == 1:
        only = everyone[0]
        return Unplaceable(
            f"Worker '{only.worker_name}' cannot place {what}: {only.reason}", everyone
        )
    if not everyone:
        return Unplaceable(f"No worker can place {what}: no worker is registered", everyone)
    listed = "; ".join(f"{r.worker_name}: {r.reason}" for r in everyone[:MAX_EXPLAINED])
    rest = len(everyone) - MAX_EXPLAINED
    if rest > 0:
        listed += f"; and {rest} more workers"
    return Unplaceable(f"No worker can place {what}: {listed}", everyone)
