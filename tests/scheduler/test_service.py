"""``Scheduler``: its rank and capacity indexes give exactly the answer of the
plain full scan, and it rebuilds, books and releases consistently."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.scheduler import (
    POLICIES,
    Placement,
    PlacementRequest,
    PortRange,
    Refusal,
    Scheduler,
    demand_for,
    place,
)
from shared.engines import EngineConfig
from shared.errors import ConfigError


@dataclass
class Session:
    worker_id: str
    name: str
    gpu_devices: list[dict[str, Any]] = field(default_factory=list)
    engine_ports: tuple[int, int] | None = None
    labels: dict[str, str] = field(default_factory=dict)


def sessions(rng: random.Random, count: int) -> list[Session]:
    made = []
    for i in range(count):
        gpus = rng.choice([0, 1, 2, 4, 8, 8])
        indices = list(range(gpus)) if rng.random() < 0.9 else [1, 3, 5][: max(gpus, 1)]
        made.append(Session(f"w-{i:03d}", f"gpu-{i:03d}", [{"index": g} for g in indices]))
    return made


def random_config(rng: random.Random) -> EngineConfig:
    return EngineConfig.from_mapping(_random_mapping(rng))


def _random_mapping(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.05:
        return {"gpu_count": 0}
    if roll < 0.12:
        return {"gpu_ids": [rng.choice([0, 1, 3])], "gpu_memory_utilization": 0.3}
    config: dict[str, Any] = {"gpu_memory_utilization": rng.choice([0.1, 0.3, 0.45, 0.5, 0.9])}
    config["tensor_parallel_size"] = rng.choice([1, 1, 1, 2, 4, 8, 16])
    return config


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_indexed_decisions_equal_the_full_scan(policy: str) -> None:
    rng = random.Random(11)
    fleet = sessions(rng, 60)
    ports = PortRange(40000, 40031)
    scheduler = Scheduler(policy, ports)
    decided = refused = 0
    for i in range(3000):
        # Workers come and go.
        online = [s for s in fleet if rng.random() < 0.9]
        config = random_config(rng)
        result = scheduler.place_anywhere(f"d{i}", "vllm", config, online)
        candidates = [scheduler.candidate(s) for s in online]
        request = PlacementRequest(f"d{i}", demand_for("vllm", config))
        expected = place(request, candidates, scheduler.ledger, ports, POLICIES[policy])
        if isinstance(expected, Placement):
            assert result == expected, (i, config)
            scheduler.book(f"d{i}", result)
            decided += 1
        else:
            assert isinstance(result, Refusal)
            assert {w.id for w in result.rejected} == {s.worker_id for s in online}
            refused += 1
        if rng.random() < 0.35 and len(scheduler.ledger):
            scheduler.release(rng.choice([a.instance_id for a in scheduler.ledger]))
    assert decided > 300 and refused > 300


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="round-robin"):
        Scheduler("round-robin", PortRange(1, 2))
