"""``Scheduler.place_replicas``: a deployment's instances spread over workers
first, worker labels and ``worker_selector``, a pinned worker, refusals that
say how many fit and book nothing, and the ledger rebuilt from the instances
table."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.scheduler import (
    POLICIES,
    Allocation,
    LedgerConflict,
    Placement,
    PortRange,
    Refusal,
    ReplicaRefusal,
    ReplicaRequest,
    Scheduler,
    WorkerBook,
    demand_for,
    explain_replicas,
)
from controller.scheduler.decision import PlacementRequest
from controller.scheduler.placement import placement_on, rank_key, takes
from controller.scheduler.refusal import MAX_EXPLAINED
from controller.store import Database, Deployment, Instance
from controller.store import Worker as WorkerRow
from shared.engines import EngineConfig

PORTS = PortRange(40000, 40099)


@dataclass
class Session:
    """What the scheduler reads of ``controller.fleet.AgentSession``."""

    worker_id: str
    name: str
    gpu_devices: list[dict[str, Any]] = field(default_factory=list)
    engine_ports: tuple[int, int] | None = None
    labels: dict[str, str] = field(default_factory=dict)


def session(name: str, gpus: int, **labels: str) -> Session:
    return Session(f"id-{name}", name, [{"index": i} for i in range(gpus)], labels=labels)


def config(**values: Any) -> EngineConfig:
    return EngineConfig.from_mapping(values)


def ask(
    count: int, existing: Mapping[str, int] | None = None, name: str = "llama", **values: Any
) -> ReplicaRequest:
    ids = tuple(f"{name}-{i}" for i in range(count))
    return ReplicaRequest(name, "vllm", config(**values), ids, dict(existing or {}))


def placed(result: list[Placement] | ReplicaRefusal) -> list[Placement]:
    assert isinstance(result, list), result
    return result


def refused(result: list[Placement] | ReplicaRefusal) -> ReplicaRefusal:
    assert isinstance(result, ReplicaRefusal), result
    return result


def names(placements: list[Placement]) -> list[str]:
    return [p.worker_name for p in placements]


def snapshot(scheduler: Scheduler) -> tuple[Any, ...]:
    """Everything the ledger holds, to show a refusal changed nothing."""
    allocations = sorted(scheduler.ledger, key=lambda a: a.instance_id)
    books = {
        a.worker_id: (dict(book.reserved), dict(book.ports), book.instances)
        for a in allocations
        if (book := scheduler.ledger.book(a.worker_id)) is not None
    }
    return tuple(allocations), books


# ---------------------------------------------------------------- spread


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_three_replicas_on_three_workers_land_one_per_worker(policy: str) -> None:
    fleet = [session("a", 2), session("b", 4), session("c", 8)]
    scheduler = Scheduler(policy, PORTS)
    result = placed(scheduler.place_replicas(ask(3), fleet))
    assert sorted(names(result)) == ["a", "b", "c"]
    # Booked under the instance ids, in their order.
    for instance_id, placement in zip(ask(3).instance_ids, result, strict=True):
        allocation = scheduler.ledger.allocation(instance_id)
        assert allocation is not None and allocation.worker_id == placement.worker_id
        assert allocation.gpu_indices == placement.gpu_indices
        assert allocation.port == placement.port


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_four_replicas_on_three_workers_put_two_on_one(policy: str) -> None:
    fleet = [session("a", 2), session("b", 2), session("c", 2)]
    scheduler = Scheduler(policy, PORTS)
    result = placed(scheduler.place_replicas(ask(4), fleet))
    assert sorted(Counter(names(result)).values()) == [1, 1, 2]
    # The second one on a worker takes its other GPU and its next port.
    twice = [p for p in result if Counter(names(result))[p.worker_name] == 2]
    assert {p.gpu_indices for p in twice} == {(0,), (1,)}
    assert {p.port for p in twice} == {40000, 40001}


def test_spread_beats_binpack_but_binpack_orders_the_rest() -> None:
    """Binpack alone would stack both on the fuller worker; spread first puts
    one on each, and the policy still picks which worker gets the first."""
    fleet = [session("big", 8), session("small", 2)]
    scheduler = Scheduler("binpack", PORTS)
    result = placed(scheduler.place_replicas(ask(2, gpu_memory_utilization=0.3), fleet))
    assert names(result) == ["small", "big"]
    single = scheduler.place_anywhere("other", "vllm", config(gpu_memory_utilization=0.3), fleet)
    assert isinstance(single, Placement) and single.worker_name == "small"


def test_existing_instances_count_toward_spread() -> None:
    fleet = [session("a", 4), session("b", 4), session("c", 4)]
    scheduler = Scheduler("binpack", PORTS)
    # a already runs one: the two new ones go to b and c.
    result = placed(scheduler.place_replicas(ask(2, {"id-a": 1}), fleet))
    assert sorted(names(result)) == ["b", "c"]
    # Fewest first: of "mistral" a runs 2, b 1, c none. The first goes to c;
    # then b and c have 1 each and binpack takes the fuller, c; then b (1 < 2);
    # only then a, b and c tie at 2 and binpack picks the fullest, c.
    fresh = Scheduler("binpack", PORTS)
    existing = {"id-a": 2, "id-b": 1}
    result = placed(fresh.place_replicas(ask(4, existing, name="mistral"), fleet))
    assert names(result) == ["c", "c", "b", "c"]


def test_a_worker_with_an_instance_is_used_when_no_other_can_take_one() -> None:
    fleet = [session("a", 2), session("b", 1)]
    scheduler = Scheduler("spread", PORTS)
    scheduler.book("full", placed_on(scheduler, fleet[1], (0,)))
    result = placed(scheduler.place_replicas(ask(2, {"id-a": 1}), fleet))
    assert names(result) == ["a", "a"]


def placed_on(scheduler: Scheduler, worker: Session, gpus: tuple[int, ...]) -> Placement:
    """A placement holding the whole of ``gpus`` on ``worker``, as if decided."""
    port = PORTS.low + len(scheduler.ledger) + 50
    return Placement(worker.worker_id, worker.name, gpus, 1.0, port)


# ---------------------------------------------------------------- labels


def test_worker_selector_keeps_instances_on_matching_workers() -> None:
    fleet = [
        session("x", 2, gpu="a100", zone="eu"),
        session("y", 1, gpu="a100"),
        session("z", 8, gpu="h100"),
        session("bare", 8),
    ]
    scheduler = Scheduler("binpack", PORTS)
    result = placed(scheduler.place_replicas(ask(2, worker_selector={"gpu": "a100"}), fleet))
    assert sorted(names(result)) == ["x", "y"]
    both = {"gpu": "a100", "zone": "eu"}
    result = placed(scheduler.place_replicas(ask(1, name="eu", worker_selector=both), fleet))
    assert names(result) == ["x"]


def test_selector_refusal_names_the_labels_each_worker_lacks() -> None:
    fleet = [session("x", 1, gpu="a100"), session("z", 8, gpu="h100"), session("bare", 8)]
    scheduler = Scheduler("binpack", PORTS)
    before = snapshot(scheduler)
    selector = {"gpu": "a100", "zone": "eu"}
    refusal = refused(scheduler.place_replicas(ask(2, worker_selector=selector), fleet))
    assert (refusal.requested, refusal.fitted) == (2, 0)
    assert snapshot(scheduler) == before
    assert explain_replicas(refusal).detail == (
        "No worker can place any of the 2 replicas of 'llama' (needs 1 GPU with 0.90 free): "
        "bare: labels do not match worker_selector (needs gpu=a100, zone=eu; "
        "has no gpu label, no zone label); "
        "x: labels do not match worker_selector (needs zone=eu; has no zone label); "
        "z: labels do not match worker_selector (needs gpu=a100, zone=eu; "
        "has gpu=h100, no zone label)"
    )


def test_place_anywhere_and_place_on_honour_the_selector_too() -> None:
    fleet = [session("x", 1, gpu="a100"), session("z", 1, gpu="h100")]
    scheduler = Scheduler("binpack", PORTS)
    wanted = config(worker_selector={"gpu": "h100"})
    result = scheduler.place_anywhere("llama", "vllm", wanted, fleet)
    assert isinstance(result, Placement) and result.worker_name == "z"
    named = scheduler.place_on("llama", "vllm", wanted, fleet[0])
    assert isinstance(named, Refusal)
    assert [r.reason for r in named.rejections()] == [
        "labels do not match worker_selector (needs gpu=h100; has gpu=a100)"
    ]


def test_new_labels_of_a_session_reach_placement() -> None:
    """The candidate is cached per session; a session with other labels (a
    reconnect after ``--label`` changed) is seen with the new ones."""
    scheduler = Scheduler("binpack", PORTS)
    first = session("x", 1, gpu="h100")
    scheduler.place_anywhere("warm", "vllm", config(), [first])
    again = Session(first.worker_id, "x", first.gpu_devices, labels={"gpu": "a100"})
    result = scheduler.place_replicas(ask(1, worker_selector={"gpu": "a100"}), [again])
    assert names(placed(result)) == ["x"]
    assert scheduler.candidate(again).labels == (("gpu", "a100"),)


# ---------------------------------------------------------------- refusals


def test_refusal_says_how_many_fit_and_books_nothing() -> None:
    fleet = [session("a", 1), session("b", 1), session("c", 1)]
    scheduler = Scheduler("binpack", PORTS)
    scheduler.book("other", placed_on(scheduler, fleet[2], (0,)))
    before = snapshot(scheduler)
    first_choice = scheduler.place_anywhere("probe", "vllm", config(), fleet)
    refusal = refused(scheduler.place_replicas(ask(3), fleet))
    assert (refusal.requested, refusal.fitted, refusal.rejected) == (3, 2, 3)
    assert snapshot(scheduler) == before
    assert all(scheduler.ledger.allocation(i) is None for i in ask(3).instance_ids)
    # The index is as before too: the same next decision.
    assert scheduler.place_anywhere("probe", "vllm", config(), fleet) == first_choice
    error = explain_replicas(refusal, offline_names=["d"])
    assert error.status_code == 409
    assert error.detail == (
        "Only 2 of 3 replicas of 'llama' (needs 1 GPU with 0.90 free) fit, on a, b; "
        "no worker can take the rest: "
        "a: no GPU has 0.90 free (best 0.10); "
        "b: no GPU has 0.90 free (best 0.10); "
        "c: no GPU has 0.90 free (best 0.00); "
        "d: offline"
    )
    # Asking again for as many as fit succeeds, on the workers it named.
    result = placed(scheduler.place_replicas(ask(refusal.fitted), fleet))
    assert [p.worker_id for p in result] == [p.worker_id for p in refusal.placed]


def test_one_instance_refusal_reads_as_the_single_placement_409() -> None:
    scheduler = Scheduler("binpack", PORTS)
    small = [session("gpu-03", 1)]
    refusal = refused(scheduler.place_replicas(ask(1, tensor_parallel_size=2), small))
    assert explain_replicas(refusal, ["gpu-02"]).detail == (
        "No worker can place 'llama' (needs 2 GPUs with 0.90 free each): "
        "gpu-02: offline; gpu-03: tensor_parallel_size 2 > 1 GPUs"
    )
    nobody = refused(scheduler.place_replicas(ask(2), []))
    assert explain_replicas(nobody).detail == (
        "No worker can place any of the 2 replicas of 'llama' (needs 1 GPU with 0.90 free): "
        "no worker is registered"
    )


def test_long_replica_refusals_are_bounded() -> None:
    fleet = [session(f"w{i:03d}", 1) for i in range(200)]
    scheduler = Scheduler("spread", PORTS)
    refusal = refused(scheduler.place_replicas(ask(201), fleet))
    assert refusal.fitted == 200
    assert len(refusal.rejections) == MAX_EXPLAINED
    error = explain_replicas(refusal, [f"x{i:03d}" for i in range(50)])
    assert error.detail.startswith(
        "Only 200 of 201 replicas of 'llama' (needs 1 GPU with 0.90 free) fit, on w000, w001,"
    )
    assert " and 175 more workers; no worker can take the rest: " in error.detail
    assert error.detail.endswith("w024: no GPU has 0.90 free (best 0.10); and 225 more workers")
    assert len(error.rejections) == MAX_EXPLAINED
    assert len(scheduler.ledger) == 0


def test_ids_already_booked_are_refused_before_anything_is_booked() -> None:
    fleet = [session("a", 4)]
    scheduler = Scheduler("binpack", PORTS)
    placed(scheduler.place_replicas(ask(1), fleet))
    before = snapshot(scheduler)
    with pytest.raises(LedgerConflict, match="booked already"):
        scheduler.place_replicas(ask(2), fleet)  # llama-0 is booked
    doubled = ReplicaRequest("x", "vllm", config(), ("same", "same"))
    with pytest.raises(LedgerConflict):
        scheduler.place_replicas(doubled, fleet)
    assert snapshot(scheduler) == before


# ---------------------------------------------------------------- pinned


def test_a_pinned_worker_takes_every_instance() -> None:
    fleet = [session("a", 4), session("b", 4), session("c", 4)]
    scheduler = Scheduler("spread", PORTS)
    result = placed(scheduler.place_replicas(ask(3), fleet, pinned=fleet[1]))
    assert names(result) == ["b", "b", "b"]
    assert sorted(p.gpu_indices for p in result) == [(0,), (1,), (2,)]
    assert len({p.port for p in result}) == 3


def test_a_pinned_worker_that_fills_up_or_lacks_labels_is_explained() -> None:
    fleet = [session("a", 4), session("b", 2, gpu="h100")]
    scheduler = Scheduler("binpack", PORTS)
    refusal = refused(scheduler.place_replicas(ask(3), fleet, pinned=fleet[1]))
    assert (refusal.fitted, refusal.rejected, refusal.pinned) == (2, 1, True)
    assert len(scheduler.ledger) == 0
    assert explain_replicas(refusal, ["offline-one"]).detail == (
        "Only 2 of 3 replicas of 'llama' (needs 1 GPU with 0.90 free) fit on worker 'b'; "
        "the rest do not: no GPU has 0.90 free (best 0.10)"
    )
    selected = ask(2, worker_selector={"gpu": "a100"})
    refusal = refused(scheduler.place_replicas(selected, fleet, pinned=fleet[1]))
    assert explain_replicas(refusal).detail == (
        "Worker 'b' cannot place any of the 2 replicas of 'llama' (needs 1 GPU with 0.90 "
        "free): labels do not match worker_selector (needs gpu=a100; has gpu=h100)"
    )


def test_a_pinned_worker_without_gpus_runs_them_cpu_only() -> None:
    cpu = session("cpu", 0)
    scheduler = Scheduler("binpack", PORTS)
    result = placed(scheduler.place_replicas(ask(2), [cpu], pinned=cpu))
    assert [(p.gpu_indices, p.fraction) for p in result] == [((), 0.0), ((), 0.0)]


# ---------------------------------------------------------------- against the definition


def fleet_of(rng: random.Random, count: int) -> list[Session]:
    made = []
    for i in range(count):
        gpus = rng.choice([0, 1, 2, 4, 8])
        labels = {"gpu": rng.choice(["a100", "h100"])} if rng.random() < 0.7 else {}
        made.append(session(f"w{i:02d}", gpus, **labels))
    return made


def random_values(rng: random.Random) -> dict[str, Any]:
    values: dict[str, Any] = {"gpu_memory_utilization": rng.choice([0.2, 0.45, 0.9])}
    values["tensor_parallel_size"] = rng.choice([1, 1, 2, 4])
    if rng.random() < 0.2:
        values["worker_selector"] = {"gpu": rng.choice(["a100", "h100"])}
    if rng.random() < 0.05:
        values = {"gpu_count": 0}
    return values


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_one_instance_picks_what_place_anywhere_picks(policy: str) -> None:
    rng = random.Random(5)
    fleet = fleet_of(rng, 40)
    scheduler = Scheduler(policy, PortRange(40000, 40015))
    agreed = 0
    for i in range(1500):
        online = [s for s in fleet if rng.random() < 0.9]
        wanted = config(**random_values(rng))
        single = scheduler.place_anywhere(f"d{i}", "vllm", wanted, online)
        batch = scheduler.place_replicas(
            ReplicaRequest(f"d{i}", "vllm", wanted, (f"i{i}",)), online
        )
        if isinstance(single, Placement):
            assert batch == [single], (i, wanted)
            agreed += 1
        else:
            assert isinstance(batch, ReplicaRefusal) and batch.fitted == 0
        if rng.random() < 0.3 and len(scheduler.ledger):
            scheduler.release(rng.choice([a.instance_id for a in scheduler.ledger]))
    assert agreed > 300


def by_definition(
    scheduler: Scheduler, request: ReplicaRequest, online: list[Session]
) -> list[Placement]:
    """Every instance on a worker with the fewest instances of the deployment,
    then the best rank, over a full scan each time; books, then gives back."""
    counts = Counter({k: v for k, v in request.existing.items() if v > 0})
    decision = PlacementRequest(
        request.name,
        demand_for(request.backend, request.config),
        selector=frozenset((request.config.worker_selector or {}).items()),
    )
    candidates = [scheduler.candidate(s) for s in online]
    chosen: list[Placement] = []
    for instance_id in request.instance_ids:
        best: tuple[Any, ...] | None = None
        for worker in candidates:
            book = scheduler.ledger.book(worker.id) or WorkerBook()
            if takes(decision, worker, book, scheduler.ports, scheduler.policy):
                key = (counts[worker.id], *rank_key(worker, book, scheduler.policy))
                if best is None or key < best[0]:
                    best = (key, worker, book)
        if best is None:
            break
        placement = placement_on(decision, best[1], best[2], scheduler.ports, scheduler.policy)
        counts[placement.worker_id] += 1
        scheduler.ledger.add(
            Allocation(
                instance_id,
                placement.worker_id,
                placement.gpu_indices,
                placement.fraction,
                placement.port,
            )
        )
        chosen.append(placement)
    for instance_id in reversed(request.instance_ids[: len(chosen)]):
        scheduler.ledger.remove(instance_id, undo=True)
    return chosen


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_batches_equal_the_definition_by_full_scans(policy: str) -> None:
    rng = random.Random(9)
    fleet = fleet_of(rng, 30)
    scheduler = Scheduler(policy, PortRange(40000, 40031))
    placed_batches = refusals = 0
    for i in range(600):
        online = [s for s in fleet if rng.random() < 0.9]
        count = rng.choice([1, 2, 3, 5, 8])
        existing = {s.worker_id: rng.choice([1, 2]) for s in rng.sample(fleet, rng.randint(0, 4))}
        ids = tuple(f"b{i}-{k}" for k in range(count))
        request = ReplicaRequest(f"b{i}", "vllm", config(**random_values(rng)), ids, existing)
        expected = by_definition(scheduler, request, online)
        result = scheduler.place_replicas(request, online)
        if len(expected) == count:
            assert result == expected, i
            placed_batches += 1
        else:
            assert isinstance(result, ReplicaRefusal), i
            assert list(result.placed) == expected
            refusals += 1
        if rng.random() < 0.5 and len(scheduler.ledger):
            for _ in range(rng.randint(1, 6)):
                if len(scheduler.ledger):
                    scheduler.release(rng.choice([a.instance_id for a in scheduler.ledger]))
    assert placed_batches > 100 and refusals > 50


# ---------------------------------------------------------------- rebuilt from the store


@pytest.fixture
async def db(tmp_path: Path, database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url or f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await database.create_schema()
    yield database
    await database.close()


async def test_load_rebuilds_the_ledger_from_the_instances(db: Database) -> None:
    async with db.session() as s:
        a, b = WorkerRow(name="gpu-a"), WorkerRow(name="gpu-b")
        s.add_all([a, b])
        await s.flush()
        llama = Deployment(
            name="llama", backend="vllm", model="m", replicas=3,
            config={"gpu_memory_utilization": 0.9},
            # The aggregate columns name a worker, but only instances book.
            worker_id=a.id, gpu_indices=[5], port=40999,
        )  # fmt: skip
        s.add(llama)
        await s.flush()
        s.add_all(
            [
                # An older spec's instance keeps its own config (0.45).
                Instance(
                    id="i-old", deployment_id=llama.id, worker_id=a.id, gpu_indices=[0],
                    port=40000, model="m", config={"gpu_memory_utilization": 0.45},
                ),
                Instance(
                    id="i-new", deployment_id=llama.id, worker_id=b.id, gpu_indices=[0, 1],
                    port=40000, model="m", config={"tensor_parallel_size": 2},
                ),
                # Not placed (waiting for room): books nothing.
                Instance(id="i-wait", deployment_id=llama.id, worker_id=None, model="m"),
            ]
        )  # fmt: skip
        await s.commit()
        a_id, b_id = a.id, b.id
    scheduler = Scheduler("binpack", PORTS)
    await scheduler.load(db)
    assert sorted(scheduler.ledger, key=lambda x: x.instance_id) == [
        Allocation("i-new", b_id, (0, 1), 0.9, 40000),
        Allocation("i-old", a_id, (0,), 0.45, 40000),
    ]
    assert scheduler.gpu_usage(a_id, 0).instances == ("i-old",)
    assert scheduler.gpu_usage(a_id, 5).instances == ()
    # The rebuilt bookings steer the next decision and can be released by id.
    fleet = [Session(a_id, "gpu-a", [{"index": 0}, {"index": 1}])]
    result = placed(scheduler.place_replicas(ask(1, gpu_memory_utilization=0.45), fleet))
    assert (result[0].gpu_indices, result[0].port) == ((0,), 40001)
    assert scheduler.release("i-old") is not None
    assert scheduler.gpu_usage(a_id, 0).instances == ("llama-0",)
