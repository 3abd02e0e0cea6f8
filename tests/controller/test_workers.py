"""``/api/workers`` over the real server (workers registered through the store)."""

from __future__ import annotations

from controller import appkeys
from controller.store import Worker
from controller.store.timeutil import utcnow
from tests.conftest import Controller
from tests.controller.test_deployments import MISSING, add_deployment

GPU_INFO = {
    "count": 2,
    "simulated": False,
    "devices": [
        {"index": 0, "uuid": "GPU-a", "name": "NVIDIA A100", "memory": 81920},
        {"index": 1, "uuid": "GPU-b", "name": "NVIDIA A100", "memory": 81920},
    ],
}


async def add_gpu_worker(ctl: Controller) -> str:
    async with ctl.app[appkeys.DATABASE].session() as session:
        worker = Worker(
            name="gpu-worker-01",
            status="online",
            advertise_address="10.0.0.5",
            agent_version="0.1.0",
            gpu_info=GPU_INFO,
            system_info={"cpu_count": 32, "memory_total": 128_000_000_000},
            last_heartbeat=utcnow(),
        )
        session.add(worker)
        await session.commit()
        return worker.id


async def test_list_and_get(controller: Controller) -> None:
    worker_id = await add_gpu_worker(controller)
    deployment_id = await add_deployment(controller, "llama", worker_id)

    status, listing = await controller.admin("GET", "/api/workers")
    assert status == 200
    [item] = listing["items"]
    assert item["id"] == worker_id and item["name"] == "gpu-worker-01"
    assert item["status"] == "online"
    assert item["gpu_info"]["count"] == 2
    assert item["gpu_info"]["devices"][0]["name"] == "NVIDIA A100"
    assert item["gpu_info"]["devices"][0]["memory"] == 81920
    assert item["last_heartbeat"].endswith("Z")

    status, one = await controller.admin("GET", f"/api/workers/{worker_id}")
    assert status == 200
    assert one["system_info"] == {"cpu_count": 32, "memory_total": 128_000_000_000}
    assert [d["id"] for d in one["deployments"]] == [deployment_id]


async def test_unknown_worker_is_404(controller: Controller) -> None:
    for path in (
        f"/api/workers/{MISSING}",
        "/api/workers/zzz",
        f"/api/workers/{MISSING}/containers",
    ):
        status, body = await controller.admin("GET", path)
        assert status == 404, path
        assert body["status_code"] == 404


async def test_containers_without_agent_is_503(controller: Controller) -> None:
    worker_id = await add_gpu_worker(controller)
    status, body = await controller.admin("GET", f"/api/workers/{worker_id}/containers")
    assert status == 503
    assert "agent" in body["detail"]
