"""Placement over the real REST API and gRPC fleet: automatic placement, the
explained 409, 404/503 for a named worker, concurrency, ports, restarts and the
worker views."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller import appkeys
from controller.store import Worker as WorkerRow
from tests.conftest import Controller
from tests.scheduler.workers import raw_worker

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def make_controller(tmp_path: Path, database_url: str) -> AsyncIterator[Any]:
    made: list[Controller] = []

    async def make(**overrides: Any) -> Controller:
        ctl = Controller(
            data_dir=tmp_path / f"data{len(made)}", overrides=overrides, database_url=database_url
        )
        await ctl.start()
        made.append(ctl)
        return ctl

    yield make
    for ctl in made:
        await ctl.close()


async def create(ctl: Controller, name: str, **body: Any) -> tuple[int, dict[str, Any]]:
    status, created = await ctl.admin(
        "POST", "/api/deployments", json={"name": name, "model": "m", **body}
    )
    assert isinstance(created, dict)
    return status, created


async def created_ok(ctl: Controller, name: str, **body: Any) -> dict[str, Any]:
    status, created = await create(ctl, name, **body)
    assert status == 201, created
    status, one = await ctl.admin("GET", f"/api/deployments/{created['id']}")
    assert status == 200
    assert isinstance(one, dict)
    return one


async def add_offline_worker(ctl: Controller, name: str) -> str:
    async with ctl.app[appkeys.DATABASE].session() as session:
        row = WorkerRow(name=name, status="offline")
        session.add(row)
        await session.commit()
        return row.id


async def worker_view(ctl: Controller, worker_id: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert status == 200
    assert isinstance(body, dict)
    return body


async def test_create_without_worker_places_and_deploys(controller: Controller) -> None:
    async with (
        raw_worker(controller, "gpu-small", gpus=2) as small,
        raw_worker(controller, "gpu-big", gpus=4),
    ):
        one = await created_ok(controller, "llama")
        # Binpack: both are empty, so the worker with less free capacity.
        assert one["worker_id"] == small.id
        assert one["gpu_indices"] == [0] and one["port"] == 40000
        deploy = await small.next_deploy()
        assert deploy.deployment_id == one["id"]
        assert list(deploy.gpu_indices) == [0] and deploy.host_port == 40000


async def test_nothing_fits_is_409_naming_each_worker(controller: Controller) -> None:
    await add_offline_worker(controller, "gpu-02")
    async with (
        raw_worker(controller, "gpu-01", gpus=2) as gpu01,
        raw_worker(controller, "gpu-03", gpus=1),
    ):
        for i in (0, 1):
            half = {"gpu_ids": [i], "gpu_memory_utilization": 0.45}
            await created_ok(controller, f"half-{i}", worker_id=gpu01.id, config=half)
        status, body = await create(controller, "llama", config={"tensor_parallel_size": 2})
    assert status == 409
    assert body == {
        "status_code": 409,
        "detail": "No worker can place 'llama' (needs 2 GPUs with 0.90 free each): "
        "gpu-01: no GPU has 0.90 free (best 0.55); "
        "gpu-02: offline; "
        "gpu-03: tensor_parallel_size 2 > 1 GPUs",
    }
    _, listing = await controller.admin("GET", "/api/deployments")
    assert sorted(d["name"] for d in listing["items"]) == ["half-0", "half-1"]


async def test_no_worker_at_all_is_409(controller: Controller) -> None:
    status, body = await create(controller, "llama")
    assert status == 409
    assert "no worker is registered" in body["detail"]


async def test_named_worker_missing_offline_or_too_small(controller: Controller) -> None:
    status, body = await create(controller, "a", worker_id=MISSING)
    assert status == 404 and MISSING in body["detail"]
    offline = await add_offline_worker(controller, "gpu-off")
    status, body = await create(controller, "a", worker_id=offline)
    assert status == 503 and "'gpu-off' is offline" in body["detail"]
    async with raw_worker(controller, "gpu-01", gpus=2) as worker:
        status, body = await create(
            controller, "a", worker_id=worker.id, config={"tensor_parallel_size": 4}
        )
        assert status == 409
        assert body["detail"] == (
            "Worker 'gpu-01' cannot place 'a' (needs 4 GPUs with 0.90 free each): "
            "tensor_parallel_size 4 > 2 GPUs"
        )
        # With room, the named worker picks the GPUs itself.
        one = await created_ok(controller, "b", worker_id=worker.id)
        assert one["worker_id"] == worker.id and one["gpu_indices"] == [0]


async def test_pinned_gpus_over_rest(controller: Controller) -> None:
    async with raw_worker(controller, "gpu-01", gpus=2) as worker:
        one = await created_ok(controller, "pinned", config={"gpu_ids": [1]})
        assert one["gpu_indices"] == [1] and one["worker_id"] == worker.id
        status, body = await create(controller, "nowhere", config={"gpu_ids": [7]})
        assert status == 409
        assert "gpu-01: GPU 7 does not exist (GPUs 0-1)" in body["detail"]
        status, body = await create(controller, "taken", config={"gpu_ids": [1]})
        assert status == 409
        assert "pinned GPU 1 has 0.10 free, 0.90 needed" in body["detail"]


async def test_cpu_only_deployment_reserves_no_gpu(controller: Controller) -> None:
    async with raw_worker(controller, "gpu-01", gpus=1) as worker:
        await created_ok(controller, "big", config={"gpu_memory_utilization": 1.0})
        cpu = await created_ok(controller, "cpu", config={"gpu_count": 0})
        assert cpu["worker_id"] == worker.id
        assert cpu["gpu_indices"] == [] and cpu["port"] == 40001
        view = await worker_view(controller, worker.id)
        assert view["gpu_info"]["devices"][0]["reserved"] == 1.0


async def test_concurrent_creates_never_over_commit(controller: Controller) -> None:
    async with (
        raw_worker(controller, "gpu-01", gpus=2) as first,
        raw_worker(controller, "gpu-02", gpus=2) as second,
    ):
        # 4 GPUs x 3 slots of 0.3 = 12 fit; 50 arrive at once.
        results = await asyncio.gather(
            *(
                create(controller, f"m-{i:02d}", config={"gpu_memory_utilization": 0.3})
                for i in range(50)
            )
        )
        statuses = Counter(status for status, _ in results)
        assert statuses == {201: 12, 409: 38}
        _, listing = await controller.admin("GET", "/api/deployments", params={"limit": "100"})
        assert listing["total"] == 12
        for worker in (first, second):
            mine = [d for d in listing["items"] if d["worker_id"] == worker.id]
            ports = [d["port"] for d in mine]
            assert len(ports) == len(set(ports)) == 6
            per_gpu = Counter(i for d in mine for i in d["gpu_indices"])
            assert per_gpu == {0: 3, 1: 3}
            view = await worker_view(controller, worker.id)
            assert [g["reserved"] for g in view["gpu_info"]["devices"]] == [0.9, 0.9]


async def test_concurrent_tensor_parallel_creates(controller: Controller) -> None:
    """Whole-GPU TP deployments racing for one 4-GPU worker: exactly two fit."""
    async with raw_worker(controller, "gpu-01", gpus=4):
        results = await asyncio.gather(
            *(create(controller, f"tp-{i}", config={"tensor_parallel_size": 2}) for i in range(8))
        )
        placed = [body for status, body in results if status == 201]
        assert len(placed) == 2
        gpus = []
        for body in placed:
            _, one = await controller.admin("GET", f"/api/deployments/{body['id']}")
            gpus.extend(one["gpu_indices"])
        assert sorted(gpus) == [0, 1, 2, 3]


async def test_delete_releases_gpu_and_port(controller: Controller) -> None:
    async with raw_worker(controller, "gpu-01", gpus=1) as worker:
        first = await created_ok(controller, "first")
        assert first["port"] == 40000
        status, _ = await create(controller, "second")
        assert status == 409
        status, _ = await controller.admin("DELETE", f"/api/deployments/{first['id']}")
        assert status == 204
        view = await worker_view(controller, worker.id)
        assert view["gpu_info"]["devices"][0]["reserved"] == 0.0
        second = await created_ok(controller, "second")
        # The GPU is free again; ports are handed out in turn (40000 comes last).
        assert second["gpu_indices"] == [0] and second["port"] == 40001


async def test_ports_are_allocated_per_worker_from_the_range(make_controller: Any) -> None:
    ctl: Controller = await make_controller(engine_port_min=41000, engine_port_max=41001)
    async with raw_worker(ctl, "gpu-01", gpus=1) as worker:
        ports = [
            (await created_ok(ctl, f"cpu-{i}", config={"gpu_count": 0}))["port"] for i in (0, 1)
        ]
        assert ports == [41000, 41001]
        status, body = await create(ctl, "cpu-2", config={"gpu_count": 0})
        assert status == 409
        assert "gpu-01: no free host port in 41000-41001" in body["detail"]
        # Another worker has its own range.
        async with raw_worker(ctl, "gpu-02", gpus=0) as other:
            third = await created_ok(ctl, "cpu-2", config={"gpu_count": 0})
            assert third["worker_id"] == other.id and third["port"] == 41000
        assert worker.id != other.id


async def test_spread_policy_setting(make_controller: Any) -> None:
    ctl: Controller = await make_controller(placement_policy="spread")
    async with raw_worker(ctl, "gpu-01", gpus=2), raw_worker(ctl, "gpu-02", gpus=2):
        small = {"gpu_memory_utilization": 0.2}
        workers = {(await created_ok(ctl, f"m-{i}", config=small))["worker_id"] for i in range(2)}
        assert len(workers) == 2


async def test_reservations_are_rebuilt_after_a_restart(controller: Controller) -> None:
    async with raw_worker(controller, "gpu-01", gpus=2) as worker:
        first = await created_ok(controller, "first")
        assert (first["gpu_indices"], first["port"]) == ([0], 40000)
    await controller.restart()
    async with raw_worker(controller, "gpu-01", gpus=2) as again:
        assert again.id == worker.id
        view = await worker_view(controller, worker.id)
        assert view["gpu_info"]["devices"][0]["deployments"] == [first["id"]]
        second = await created_ok(controller, "second")
        assert (second["gpu_indices"], second["port"]) == ([1], 40001)
        status, _ = await create(controller, "third")
        assert status == 409


async def test_worker_views_show_allocation_and_free_capacity(controller: Controller) -> None:
    async with raw_worker(controller, "gpu-01", gpus=3, simulated=True) as worker:
        half = {"gpu_ids": [0], "gpu_memory_utilization": 0.45}
        a = await created_ok(controller, "a", config=half)
        b = await created_ok(controller, "b", config=half)
        c = await created_ok(
            controller, "c", config={"gpu_ids": [1], "gpu_memory_utilization": 0.7}
        )
        view = await worker_view(controller, worker.id)
        assert view["gpu_info"]["simulated"] is True
        devices = view["gpu_info"]["devices"]
        assert [d["reserved"] for d in devices] == [0.9, 0.7, 0.0]
        assert devices[0]["deployments"] == [a["id"], b["id"]]
        assert devices[1]["deployments"] == [c["id"]] and devices[2]["deployments"] == []
        assert view["gpu_free"] == pytest.approx(1.4) and view["free_gpus"] == 1
        _, listing = await controller.admin("GET", "/api/workers")
        [item] = listing["items"]
        assert item["gpu_free"] == pytest.approx(1.4) and item["free_gpus"] == 1
        assert item["gpu_info"]["devices"][1]["reserved"] == 0.7
