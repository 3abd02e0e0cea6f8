"""The in-memory ledger: what is reserved where, so a decision never reads the store.

Per worker it books the fraction of each GPU that instances (the replicas of
deployments, one engine container each) reserve and the host ports they hold;
per instance it keeps its ``Allocation`` so stopping or deleting it releases
exactly what it took. The ledger knows instances only by id; which deployment
one belongs to is the store's business.

Invariants:
* An instance has at most one allocation; everything in a worker's book
  belongs to an allocation of that worker.
* ``reserved[i]`` equals the sum of ``holders[i]``; it is recomputed from the
  holders on every change, so float rounding never accumulates over time. The
  book's summaries (``partial_frees`` ...) are refreshed on the same change.
* A host port belongs to at most one instance on a worker, and an
  allocation booked with its worker's ``PortRange`` holds a port inside it
  (``add`` refuses any other).
* Ports are handed out in turn (``next_free_port``: the first free one after
  the last booked, wrapping around), so a port just released is the last one
  given again: the container that held it may still be stopping on its host
  (and a client may still hold a connection to it) when the next instance is
  placed.

Concurrency: plain synchronous code with no awaits. Mutations happen on the
controller's event loop under the deployment service's placement lock
(``controller.deployments``); reads are safe at any time on the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


class LedgerConflict(ValueError):
    """An allocation would book an instance twice, a port for two instances,
    or a port outside its worker's range."""


@dataclass(frozen=True)
class PortRange:
    """Host ports ``low``..``high``, both inclusive."""

    low: int
    high: int
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", self.high - self.low + 1)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Allocation:
    """Where an instance runs: worker, GPU indices, fraction of each, host port."""

    instance_id: str
    worker_id: str
    gpu_indices: tuple[int, ...]
    fraction: float
    port: int | None


@dataclass
class WorkerBook:
    """One worker's reservations, with summaries placement reads in O(1).

    ``partial_frees`` (ascending), ``partial_free_sum`` and ``max_index`` are
    derived from ``reserved`` and refreshed on every change; GPUs absent from
    ``reserved`` are wholly free."""

    # GPU index → fraction reserved (may exceed 1.0 only if the store says so).
    reserved: dict[int, float] = field(default_factory=dict)
    # GPU index → instance id → fraction.
    holders: dict[int, dict[str, float]] = field(default_factory=dict)
    # Host port → instance id.
    ports: dict[int, str] = field(default_factory=dict)
    # Instances booked on the worker (the policies' tie-break).
    instances: int = 0
    # Free fraction of each GPU with a reservation, ascending.
    partial_frees: list[float] = field(default_factory=list)
    # Their sum, each counted at no less than 0.
    partial_free_sum: float = 0.0
    # Highest GPU index with a reservation; -1 when none.
    max_index: int = -1
    # The last port booked here; the next one is looked for after it.
    last_port: int = 0

    def free(self, index: int) -> float:
        return 1.0 - self.reserved.get(index, 0.0)

    def hold(self, index: int, instance_id: str, fraction: float) -> None:
        holders = self.holders.setdefault(index, {})
        holders[instance_id] = fraction
        self.reserved[index] = sum(holders.values())
        self._refresh()

    def drop(self, index: int, instance_id: str) -> None:
        holders = self.holders.get(index, {})
        holders.pop(instance_id, None)
        if holders:
            self.reserved[index] = sum(holders.values())
        else:
            self.holders.pop(index, None)
            self.reserved.pop(index, None)
        self._refresh()

    def _refresh(self) -> None:
        self.partial_frees = sorted(1.0 - r for r in self.reserved.values())
        self.partial_free_sum = sum(max(0.0, f) for f in self.partial_frees)
        self.max_index = max(self.reserved, default=-1)

    def has_free_port(self, ports: PortRange) -> bool:
        """Whether some port of ``ports`` is not held here. Fewer holders than
        ports means one is free (pigeonhole; holders outside ``ports`` only
        make that truer), so only a nearly full worker pays for the scan."""
        return len(self.ports) < ports.size or self.next_free_port(ports) is not None

    def next_free_port(self, ports: PortRange) -> int | None:
        """The first port of ``ports`` after the last one booked here (wrapping
        around to ``ports.low``) that is not held, or ``None``."""
        held = self.ports
        start = self.last_port + 1 if self.last_port in ports else ports.low
        for offset in range(ports.size):
            port = ports.low + (start - ports.low + offset) % ports.size
            if port not in held:
                return port
        return None


_EMPTY_BOOK = WorkerBook()


class Ledger:
    def __init__(self) -> None:
        self._books: dict[str, WorkerBook] = {}
        self._allocations: dict[str, Allocation] = {}
        # Per booked instance: its worker's ``last_port`` before it (for ``undo``).
        self._last_port_before: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._allocations)

    def __iter__(self) -> Iterator[Allocation]:
        return iter(self._allocations.values())

    def book(self, worker_id: str) -> WorkerBook | None:
        return self._books.get(worker_id)

    def book_or_empty(self, worker_id: str) -> WorkerBook:
        """The worker's book, or an empty one for a worker with no bookings
        (shared by all of them: read it, never change it)."""
        return self._books.get(worker_id, _EMPTY_BOOK)

    def allocation(self, instance_id: str) -> Allocation | None:
        return self._allocations.get(instance_id)

    def add(self, allocation: Allocation, ports: PortRange | None = None) -> None:
        """Book ``allocation``; ``LedgerConflict`` (and nothing booked) if it clashes
        or its port lies outside ``ports`` (the worker's range, when given)."""
        if allocation.instance_id in self._allocations:
            raise LedgerConflict(f"instance {allocation.instance_id} is booked already")
        if ports is not None and allocation.port is not None and allocation.port not in ports:
            raise LedgerConflict(
                f"port {allocation.port} is outside the range {ports} of worker "
                f"{allocation.worker_id}"
            )
        book = self._books.setdefault(allocation.worker_id, WorkerBook())
        if allocation.port is not None:
            holder = book.ports.get(allocation.port)
            if holder is not None:
                raise LedgerConflict(
                    f"port {allocation.port} of worker {allocation.worker_id} is held by {holder}"
                )
            book.ports[allocation.port] = allocation.instance_id
            self._last_port_before[allocation.instance_id] = book.last_port
            book.last_port = allocation.port
        for index in allocation.gpu_indices:
            book.hold(index, allocation.instance_id, allocation.fraction)
        book.instances += 1
        self._allocations[allocation.instance_id] = allocation

    def remove(self, instance_id: str, *, undo: bool = False) -> Allocation | None:
        """Release what ``instance_id`` holds; ``None`` if it held nothing.
        ``undo``: it was the last booking on its worker (a refused batch is
        unbooked in reverse), and the worker hands out ports as before it."""
        allocation = self._allocations.pop(instance_id, None)
        if allocation is None:
            return None
        book = self._books[allocation.worker_id]
        if allocation.port is not None and book.ports.get(allocation.port) == instance_id:
            del book.ports[allocation.port]
        before = self._last_port_before.pop(instance_id, None)
        if undo and before is not None:
            book.last_port = before
        for index in allocation.gpu_indices:
            book.drop(index, instance_id)
        book.instances -= 1
        return allocation
