"""When nothing fits: the ``Refusal`` a decision answers, and its wording.

Guarantees:
* Every worker considered gets a reason, with numbers ("only 1 GPU has 0.90
  free, 2 needed (best other 0.55)"); a worker rejected for its labels says
  which ``worker_selector`` pairs it lacks and what it has under those keys.
* Reasons are worded only when asked for (``Refusal.rejections``), and for at
  most ``MAX_EXPLAINED`` workers, first by name; the rest are counted. So
  refusing on a large fleet costs no more than scanning it.
* A reason describes the ledger as it is when it is worded: read a refusal
  before the ledger changes (its caller still holds the placement lock).

Pure and synchronous, like ``placement``.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from controller.scheduler.capacity import EPSILON, Demand
from controller.scheduler.decision import PlacementRequest, WorkerCandidate
from controller.scheduler.ledger import Ledger, PortRange, WorkerBook
from shared.errors import Conflict
from shared.status import WorkerStatus

# At most this many workers are named in a refusal; the rest are counted.
MAX_EXPLAINED = 25


@dataclass(frozen=True)
class Rejection:
    worker_name: str
    reason: str


@dataclass(frozen=True)
class Refusal:
    """Nothing fits: the request, the workers that rejected it and the ledger
    they rejected it under; the reasons are worded on demand (``rejections``)."""

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
                _reason(
                    self.request,
                    worker,
                    self.ledger.book_or_empty(worker.id),
                    worker.ports or self.ports,
                ),
            )
            for worker in ordered
        ]


class Unplaceable(Conflict):
    """409: no worker can take the instance (or all the replicas asked for);
    ``detail`` explains each worker, ``rejections`` lists the ones it names."""

    def __init__(self, detail: str, rejections: Sequence[Rejection]) -> None:
        super().__init__(detail)
        self.rejections = tuple(rejections)


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
    if not book.has_free_port(ports):
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
