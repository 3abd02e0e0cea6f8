"""The terms of one placement decision: the workers it may choose from
(``WorkerCandidate``), what it is asked for (``PlacementRequest``) and its
answer (``Placement``).

Plain frozen values with no behaviour beyond what they derive from their own
fields at construction; ``placement`` decides with them, ``refusal`` words why
a decision found nothing, ``candidates`` builds the workers from the agents'
sessions. Immutable, so they are shared freely between decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.scheduler.capacity import Demand
from controller.scheduler.ledger import PortRange


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
