"""The reservation ledger and the shared reservation rule."""

from __future__ import annotations

from typing import Any

import pytest

from agent.backends import get_backend
from controller.scheduler import Allocation, Ledger, LedgerConflict, demand_for
from shared.engines import EngineConfig, GpuReservation, reservation


def test_add_and_remove_keep_the_books_exact() -> None:
    ledger = Ledger()
    ledger.add(Allocation("a", "w", (0, 1), 0.45, 40000))
    ledger.add(Allocation("b", "w", (1,), 0.3, 40001))
    book = ledger.book("w")
    assert book is not None
    assert book.reserved == {0: 0.45, 1: 0.75}
    assert book.holders[1] == {"a": 0.45, "b": 0.3}
    assert book.ports == {40000: "a", 40001: "b"} and book.instances == 2
    assert ledger.remove("a") == Allocation("a", "w", (0, 1), 0.45, 40000)
    assert book.reserved == {1: 0.3} and book.ports == {40001: "b"}
    assert ledger.remove("a") is None
    ledger.remove("b")
    assert book.reserved == {} and book.holders == {} and book.instances == 0


def test_release_leaves_no_rounding_residue() -> None:
    ledger = Ledger()
    for i in range(10):
        ledger.add(Allocation(f"d{i}", "w", (0,), 0.1, None))
    for i in range(9):
        ledger.remove(f"d{i}")
    book = ledger.book("w")
    assert book is not None and book.reserved == {0: 0.1}


def test_double_booking_is_refused_and_books_nothing() -> None:
    ledger = Ledger()
    ledger.add(Allocation("a", "w", (0,), 0.5, 40000))
    with pytest.raises(LedgerConflict, match="port 40000"):
        ledger.add(Allocation("b", "w", (1,), 0.5, 40000))
    with pytest.raises(LedgerConflict, match="booked already"):
        ledger.add(Allocation("a", "w", (1,), 0.5, 40001))
    book = ledger.book("w")
    assert book is not None and book.reserved == {0: 0.5} and len(ledger) == 1
    # Another worker may use the same port number.
    ledger.add(Allocation("c", "other", (0,), 0.5, 40000))


@pytest.mark.parametrize(
    ("backend", "config", "expected"),
    [
        ("vllm", {}, GpuReservation(1, 0.9)),
        (
            "vllm",
            {"tensor_parallel_size": 4, "gpu_memory_utilization": 0.5},
            GpuReservation(4, 0.5),
        ),
        ("vllm", {"gpu_count": 0}, GpuReservation(0, 0.9)),
        ("vllm", {"gpu_count": 0, "tensor_parallel_size": 1}, GpuReservation(0, 0.9)),
        ("vllm", {"gpu_ids": [1, 3], "tensor_parallel_size": 2}, GpuReservation(2, 0.9)),
        ("sglang", {"tensor_parallel_size": 2}, GpuReservation(2, 0.9)),
        ("ollama", {"tensor_parallel_size": 2}, GpuReservation(1, 1.0)),
    ],
)
def test_controller_and_agent_apply_one_rule(
    backend: str, config: dict[str, Any], expected: GpuReservation
) -> None:
    typed = EngineConfig.from_mapping(config)
    assert reservation(backend, typed) == expected
    assert get_backend(backend).gpu_reservation(typed) == expected
    demand = demand_for(backend, typed)
    assert (demand.count, demand.fraction) == (expected.count, expected.fraction)
    assert demand.cpu_only == expected.cpu_only


def test_demand_remembers_what_set_the_count() -> None:
    assert (
        demand_for("vllm", EngineConfig.from_mapping({"tensor_parallel_size": 2})).count_source
        == "tensor_parallel_size"
    )
    assert (
        demand_for("vllm", EngineConfig.from_mapping({"gpu_count": 4})).count_source == "gpu_count"
    )
    assert demand_for("vllm", EngineConfig.from_mapping({"gpu_ids": [2]})).pinned == (2,)
    assert (
        demand_for("ollama", EngineConfig.from_mapping({"tensor_parallel_size": 2})).count_source
        == "default"
    )
    assert demand_for("vllm", EngineConfig.from_mapping({"gpu_count": 0})).describe() == "CPU only"
