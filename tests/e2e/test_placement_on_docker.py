"""Placement end to end: a deployment created without ``worker_id`` is placed by
the scheduler on an ``lmstack-agent --simulate-gpus`` host and runs on the real
Docker engine with its GPU indices in ``CUDA_VISIBLE_DEVICES`` and no GPU
device request; when nothing fits, the 409 names the worker and why."""

from __future__ import annotations

from typing import Any

import docker
import pytest

from tests.conftest import Controller
from tests.e2e.conftest import AgentProcess
from tests.e2e.test_deployments_on_docker import container_of, wait_status


async def test_create_without_worker_id_on_simulated_gpus(
    e2e_controller: Controller, agents: Any, docker_client: docker.DockerClient,
    engine_image: str, prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ctl = e2e_controller
    monkeypatch.setenv("LMSTACK_SIMULATE_GPUS", "2x24")
    agent: AgentProcess = agents(f"{prefix}-sim")
    await agent.start()
    worker_id = await agent.wait_online()
    _, worker = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert worker["gpu_info"]["simulated"] is True and worker["gpu_info"]["count"] == 2

    def body(name: str, **config: Any) -> dict[str, Any]:
        return {
            "name": name,
            "model": "stand-in/tiny-chat",
            "config": {
                "image": engine_image,
                "env": {"STANDIN_START_DELAY": "0.3"},
                "startup_timeout": 30,
                **config,
            },
        }

    # Two at 0.45 share GPU 0 under binpack.
    ids = []
    for suffix in ("a", "b"):
        status, created = await ctl.admin(
            "POST", "/api/deployments", json=body(f"{prefix}-{suffix}", gpu_memory_utilization=0.45)
        )
        assert status == 201, created
        ids.append(created["id"])
    for deployment_id, suffix in zip(ids, ("a", "b"), strict=True):
        running = await wait_status(ctl, deployment_id, "running")
        assert running["worker_id"] == worker_id and running["gpu_indices"] == [0]
        container = container_of(docker_client, f"{prefix}-{suffix}")
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert not container.attrs["HostConfig"].get("DeviceRequests")

    _, worker = await ctl.admin("GET", f"/api/workers/{worker_id}")
    gpu0, gpu1 = worker["gpu_info"]["devices"]
    assert gpu0["reserved"] == 0.9 and sorted(gpu0["deployments"]) == sorted(ids)
    assert gpu1["reserved"] == 0.0 and worker["free_gpus"] == 1

    # Needs both GPUs whole: refused, with the numbers.
    status, refused = await ctl.admin(
        "POST", "/api/deployments", json=body(f"{prefix}-tp", tensor_parallel_size=2)
    )
    assert status == 409
    assert (
        f"{prefix}-sim: only 1 GPU has 0.90 free, 2 needed (best other 0.10)" in (refused["detail"])
    )
