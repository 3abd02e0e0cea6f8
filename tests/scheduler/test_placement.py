"""The pure placement core with injected fleets: policies, pinning, sharing,
CPU-only, ports and the explanations of a refusal."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.scheduler import (
    POLICIES,
    Allocation,
    Ledger,
    LedgerConflict,
    Placement,
    PlacementRequest,
    PortRange,
    Refusal,
    WorkerCandidate,
    demand_for,
    explain,
    place,
)
from shared.engines import EngineConfig

PORTS = PortRange(40000, 40009)


def worker(name: str, gpus: int) -> WorkerCandidate:
    return WorkerCandidate(id=f"id-{name}", name=name, gpus=tuple(range(gpus)))


def request(name: str = "llama", backend: str = "vllm", **config: Any) -> PlacementRequest:
    return PlacementRequest(name, demand_for(backend, EngineConfig.from_mapping(config)))


def reserve(ledger: Ledger, who: WorkerCandidate, gpus: tuple[int, ...], fraction: float) -> None:
    """An existing deployment holding ``fraction`` of ``gpus`` on ``who``."""
    port = 40000 + len(ledger)
    ledger.add(Allocation(f"dep-{len(ledger)}", who.id, gpus, fraction, port))


def placed(result: Placement | Refusal) -> Placement:
    assert isinstance(result, Placement), result
    return result


def refused(result: Placement | Refusal) -> dict[str, str]:
    assert isinstance(result, Refusal), result
    return {r.worker_name: r.reason for r in result.rejections()}


def decide(
    req: PlacementRequest,
    workers: list[WorkerCandidate],
    ledger: Ledger | None = None,
    policy: str = "binpack",
    ports: PortRange = PORTS,
) -> Placement | Refusal:
    return place(req, workers, ledger or Ledger(), ports, POLICIES[policy])


# ---------------------------------------------------------------- policies


def test_binpack_fills_the_fullest_gpu_that_fits() -> None:
    a, b = worker("a", 4), worker("b", 4)
    ledger = Ledger()
    reserve(ledger, b, (2,), 0.5)
    reserve(ledger, a, (1,), 0.3)
    # b's GPU 2 (0.5 free) is the tightest fit for 0.45.
    result = placed(decide(request(gpu_memory_utilization=0.45), [a, b], ledger))
    assert (result.worker_name, result.gpu_indices) == ("b", (2,))
    assert result.fraction == 0.45


def test_spread_takes_the_emptiest_gpu_on_the_least_loaded_worker() -> None:
    a, b = worker("a", 2), worker("b", 2)
    ledger = Ledger()
    reserve(ledger, a, (0,), 0.2)
    result = placed(decide(request(gpu_memory_utilization=0.45), [a, b], ledger, "spread"))
    assert (result.worker_name, result.gpu_indices) == ("b", (0,))
    # On a itself spread prefers its untouched GPU 1.
    result = placed(decide(request(gpu_memory_utilization=0.45), [a], ledger, "spread"))
    assert result.gpu_indices == (1,)


def test_binpack_and_spread_differ_on_the_same_fleet() -> None:
    a, b = worker("a", 2), worker("b", 2)
    ledger = Ledger()
    reserve(ledger, a, (0,), 0.5)
    req = request(gpu_memory_utilization=0.4)
    assert placed(decide(req, [a, b], ledger, "binpack")).gpu_indices == (0,)
    assert placed(decide(req, [a, b], ledger, "binpack")).worker_name == "a"
    assert placed(decide(req, [a, b], ledger, "spread")).worker_name == "b"


def test_binpack_keeps_whole_workers_free() -> None:
    """Ten 0.5 deployments in a row fill worker a before touching b."""
    a, b = worker("a", 2), worker("b", 2)
    ledger = Ledger()
    for i in range(4):
        result = placed(decide(request(gpu_memory_utilization=0.5), [b, a], ledger))
        assert result.worker_name == "a", i
        ledger.add(
            Allocation(f"d{i}", result.worker_id, result.gpu_indices, result.fraction, result.port)
        )
    assert placed(decide(request(gpu_memory_utilization=0.5), [b, a], ledger)).worker_name == "b"


def test_ties_are_broken_by_worker_name() -> None:
    workers = [worker(name, 1) for name in ("c", "a", "b")]
    for policy in POLICIES:
        assert placed(decide(request(), workers, policy=policy)).worker_name == "a"


def test_tensor_parallel_takes_that_many_gpus_of_one_worker() -> None:
    a = worker("a", 4)
    ledger = Ledger()
    reserve(ledger, a, (1,), 0.5)
    result = placed(
        decide(request(tensor_parallel_size=2, gpu_memory_utilization=0.5), [a], ledger)
    )
    # Binpack: GPU 1 (0.5 free) and then the lowest-index empty one.
    assert result.gpu_indices == (0, 1)
    result = placed(
        decide(request(tensor_parallel_size=2, gpu_memory_utilization=0.5), [a], ledger, "spread")
    )
    assert result.gpu_indices == (0, 2)


# ---------------------------------------------------------------- capacity


def test_two_deployments_at_045_share_one_gpu_a_third_does_not_fit() -> None:
    a = worker("a", 1)
    ledger = Ledger()
    req = request(gpu_memory_utilization=0.45)
    for i in range(2):
        result = placed(decide(req, [a], ledger))
        assert result.gpu_indices == (0,)
        ledger.add(Allocation(f"d{i}", a.id, result.gpu_indices, result.fraction, result.port))
    assert refused(decide(req, [a], ledger)) == {"a": "no GPU has 0.45 free (best 0.10)"}


def test_tenths_add_up_to_exactly_one_gpu() -> None:
    """Float rounding (0.1 x 10 = 0.9999999999999999) must not refuse the tenth."""
    a = worker("a", 1)
    ledger = Ledger()
    for i in range(10):
        result = placed(decide(request(gpu_memory_utilization=0.1), [a], ledger))
        ledger.add(Allocation(f"d{i}", a.id, result.gpu_indices, result.fraction, result.port))
    assert isinstance(decide(request(gpu_memory_utilization=0.1), [a], ledger), Refusal)


def test_default_reservation_is_09_of_one_gpu() -> None:
    a = worker("a", 1)
    ledger = Ledger()
    reserve(ledger, a, (0,), 0.15)
    assert refused(decide(request(), [a], ledger)) == {"a": "no GPU has 0.90 free (best 0.85)"}
    assert placed(decide(request(gpu_memory_utilization=0.85), [a], ledger)).fraction == 0.85


def test_tp_larger_than_the_worker_is_refused() -> None:
    result = decide(request(tensor_parallel_size=4), [worker("a", 2)])
    assert refused(result) == {"a": "tensor_parallel_size 4 > 2 GPUs"}
    result = decide(request(gpu_count=3), [worker("a", 2)])
    assert refused(result) == {"a": "gpu_count 3 > 2 GPUs"}


def test_short_of_gpus_names_the_numbers() -> None:
    a = worker("a", 2)
    ledger = Ledger()
    reserve(ledger, a, (1,), 0.45)
    result = decide(request(tensor_parallel_size=2), [a], ledger)
    assert refused(result) == {"a": "only 1 GPU has 0.90 free, 2 needed (best other 0.55)"}


def test_other_backends_state_their_reservation() -> None:
    a = worker("a", 1)
    ledger = Ledger()
    reserve(ledger, a, (0,), 0.05)
    # Ollama takes whole GPUs by default; SGLang 0.9.
    assert isinstance(decide(request(backend="ollama"), [a], ledger), Refusal)
    assert placed(decide(request(backend="sglang"), [a], ledger)).fraction == 0.9
    ollama = placed(decide(request(backend="ollama", tensor_parallel_size=4), [worker("b", 1)]))
    assert ollama.gpu_indices == (0,)  # Ollama ignores tensor_parallel_size


# ---------------------------------------------------------------- pinning


def test_pinned_gpus_are_used_when_free() -> None:
    a = worker("a", 4)
    result = placed(decide(request(gpu_ids=[3, 1], tensor_parallel_size=2), [a]))
    assert result.gpu_indices == (1, 3)


def test_pinned_gpus_must_exist_and_have_room() -> None:
    a = worker("a", 2)
    ledger = Ledger()
    reserve(ledger, a, (1,), 0.6)
    assert refused(decide(request(gpu_ids=[5]), [a], ledger)) == {
        "a": "GPU 5 does not exist (GPUs 0-1)"
    }
    assert refused(decide(request(gpu_ids=[1]), [a], ledger)) == {
        "a": "pinned GPU 1 has 0.40 free, 0.90 needed"
    }
    assert placed(decide(request(gpu_ids=[1], gpu_memory_utilization=0.4), [a], ledger))


def test_pinned_without_worker_searches_every_worker() -> None:
    small, big = worker("a-small", 2), worker("b-big", 8)
    result = placed(decide(request(gpu_ids=[6, 7], tensor_parallel_size=2), [small, big]))
    assert (result.worker_name, result.gpu_indices) == ("b-big", (6, 7))


# ---------------------------------------------------------------- CPU only


def test_cpu_only_reserves_no_gpu() -> None:
    a = worker("a", 1)
    ledger = Ledger()
    reserve(ledger, a, (0,), 1.0)
    result = placed(decide(request(gpu_count=0), [a], ledger))
    assert result.gpu_indices == () and result.fraction == 0.0
    assert result.port == 40001  # 40000 is held


def test_gpu_deployment_skips_gpu_less_workers_unless_named() -> None:
    cpu = worker("cpu", 0)
    reasons = refused(decide(request(), [cpu]))
    assert reasons == {"cpu": "no GPUs (set config.gpu_count to 0 to run CPU-only)"}
    named = PlacementRequest("llama", demand_for("vllm", EngineConfig()), explicit_worker=True)
    result = placed(decide(named, [cpu]))
    assert result.gpu_indices == () and result.fraction == 0.0
    # CPU-only work prefers the GPU-less worker under binpack.
    assert placed(decide(request(gpu_count=0), [worker("a", 2), cpu])).worker_name == "cpu"


# ---------------------------------------------------------------- ports


def test_ports_are_given_in_turn_and_a_released_one_last() -> None:
    a = worker("a", 4)
    ledger = Ledger()
    tiny = PortRange(40000, 40003)

    def book(instance_id: str) -> int:
        result = placed(decide(request(gpu_count=0), [a], ledger, ports=tiny))
        assert result.port is not None
        ledger.add(Allocation(instance_id, a.id, (), 0.0, result.port))
        return result.port

    assert [book(f"d{i}") for i in range(3)] == [40000, 40001, 40002]
    ledger.remove("d1")  # its container may still be stopping: not handed out next
    assert book("d3") == 40003
    assert book("d4") == 40001  # wrapped around to the only free one
    ledger.remove("d0")
    ledger.remove("d4")
    assert book("d5") == 40000  # after 40001 (the last booked): 40002, 40003 held


def test_a_worker_without_free_ports_is_refused_and_another_chosen() -> None:
    a, b = worker("a", 1), worker("b", 1)
    ledger = Ledger()
    tiny = PortRange(40000, 40001)
    for i in range(2):
        ledger.add(Allocation(f"d{i}", a.id, (), 0.0, 40000 + i))
    assert refused(decide(request(gpu_count=0), [a], ledger, ports=tiny)) == {
        "a": "no free host port in 40000-40001"
    }
    assert placed(decide(request(gpu_count=0), [a, b], ledger, ports=tiny)).worker_name == "b"


def test_ports_outside_the_range_do_not_hide_a_free_one() -> None:
    a = worker("a", 1)
    ledger = Ledger()
    ledger.add(Allocation("old", a.id, (), 0.0, 39000))  # from an earlier range setting
    tiny = PortRange(40000, 40000)
    assert placed(decide(request(gpu_count=0), [a], ledger, ports=tiny)).port == 40000


# ---------------------------------------------------------------- explanations


def test_explanation_names_every_worker_and_why() -> None:
    a, b, c = worker("gpu-01", 2), worker("gpu-03", 1), worker("gpu-04", 0)
    ledger = Ledger()
    reserve(ledger, a, (0,), 0.45)
    reserve(ledger, a, (1,), 0.45)
    result = decide(request(tensor_parallel_size=2), [a, b, c], ledger)
    assert isinstance(result, Refusal)
    error = explain(result, offline=["gpu-02"])
    assert error.status_code == 409
    assert error.detail == (
        "No worker can place 'llama' (needs 2 GPUs with 0.90 free each): "
        "gpu-01: no GPU has 0.90 free (best 0.55); "
        "gpu-02: offline; "
        "gpu-03: tensor_parallel_size 2 > 1 GPUs; "
        "gpu-04: no GPUs (set config.gpu_count to 0 to run CPU-only)"
    )
    assert [r.worker_name for r in error.rejections] == ["gpu-01", "gpu-02", "gpu-03", "gpu-04"]


def test_explanation_without_workers_and_for_a_named_worker() -> None:
    req = request(tensor_parallel_size=4)
    nobody = decide(req, [])
    assert isinstance(nobody, Refusal)
    assert explain(nobody).detail == (
        "No worker can place 'llama' (needs 4 GPUs with 0.90 free each): no worker is registered"
    )
    named = PlacementRequest("llama", req.demand, explicit_worker=True)
    result = decide(named, [worker("gpu-01", 2)])
    assert isinstance(result, Refusal)
    assert explain(result).detail == (
        "Worker 'gpu-01' cannot place 'llama' (needs 4 GPUs with 0.90 free each): "
        "tensor_parallel_size 4 > 2 GPUs"
    )


def test_long_explanations_are_capped() -> None:
    workers = [worker(f"w{i:03d}", 1) for i in range(0, 120, 2)]
    result = decide(request(tensor_parallel_size=2), workers)
    assert isinstance(result, Refusal)
    error = explain(result, offline=[f"w{i:03d}" for i in range(1, 120, 2)])
    assert "w000: tensor_parallel_size 2 > 1 GPUs; w001: offline" in error.detail
    assert "w024: tensor_parallel_size 2 > 1 GPUs" in error.detail and "w025" not in error.detail
    assert error.detail.endswith("; and 95 more workers")
    assert len(error.rejections) == 25


def test_sparse_gpu_numbering_is_handled() -> None:
    """A worker whose GPUs are not 0..n-1 (e.g. some hidden) takes the slow path."""
    odd = WorkerCandidate("id-odd", "odd", (1, 3))
    ledger = Ledger()
    reserve(ledger, odd, (3,), 0.5)
    assert placed(decide(request(gpu_memory_utilization=0.5), [odd], ledger)).gpu_indices == (3,)
    assert isinstance(decide(request(tensor_parallel_size=2), [odd], ledger), Refusal)
    # A reservation on a GPU the worker no longer reports does not count.
    gone = worker("gone", 2)
    reserve(ledger, gone, (5,), 1.0)
    result = placed(decide(request(tensor_parallel_size=2), [gone], ledger))
    assert result.gpu_indices == (0, 1)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_never_over_commits_under_random_load(policy: str) -> None:
    """Thousands of random requests: no GPU ever above 1.0, no port twice."""
    rng = random.Random(7)
    workers = [worker(f"w{i}", rng.choice([0, 1, 2, 4, 8])) for i in range(12)]
    ledger = Ledger()
    for i in range(2000):
        config: dict[str, Any] = {"gpu_memory_utilization": rng.choice([0.1, 0.25, 0.45, 0.9])}
        config["tensor_parallel_size"] = rng.choice([1, 1, 2, 4])
        if rng.random() < 0.1:
            config = {"gpu_count": 0}
        result = decide(request(**config), workers, ledger, policy, ports=PortRange(40000, 40063))
        if isinstance(result, Placement):
            ledger.add(
                Allocation(
                    f"d{i}", result.worker_id, result.gpu_indices, result.fraction, result.port
                )
            )
        if rng.random() < 0.3 and len(ledger):
            ledger.remove(rng.choice([a.instance_id for a in ledger]))
        for w in workers:
            book = ledger.book(w.id)
            if book is not None:
                assert all(r <= 1.0 + 1e-9 for r in book.reserved.values())
                assert all(40000 <= p <= 40063 for p in book.ports)
    assert len(ledger) > 0


def test_a_worker_with_its_own_port_range_gets_ports_from_it() -> None:
    ranged = WorkerCandidate(id="id-r", name="r", gpus=(0,), ports=PortRange(41000, 41001))
    ledger = Ledger()
    req = PlacementRequest("a", demand_for("vllm", EngineConfig.from_mapping({"gpu_count": 0})))
    taken = []
    for n in range(2):
        result = place(req, [ranged], ledger, PORTS, POLICIES["binpack"])
        assert isinstance(result, Placement)
        taken.append(result.port)
        ledger.add(Allocation(f"d{n}", ranged.id, (), 0.0, result.port), ranged.ports)
    assert taken == [41000, 41001]
    refused = place(req, [ranged], ledger, PORTS, POLICIES["binpack"])
    assert isinstance(refused, Refusal)
    assert "no free host port in 41000-41001" in explain(refused).detail
    with pytest.raises(LedgerConflict, match="outside the range 41000-41001"):
        ledger.add(Allocation("d9", ranged.id, (), 0.0, PORTS.low), ranged.ports)
