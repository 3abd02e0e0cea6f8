"""Fleet and store metrics after real agent traffic: workers, deployments, GPUs
(from heartbeats), agent streams, commands and their latency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Controller
from tests.fleetutil import run_agent
from tests.metrics.scrape import Scrape, scrape
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import DEFAULT_TIMEOUT, eventually

GIB = 1024**3


async def scrape_until(
    ctl: Controller, ready: Callable[[Scrape], float | bool], timeout: float = DEFAULT_TIMEOUT
) -> Scrape:
    """Scrape until ``ready(scrape)`` holds (heartbeats and statuses arrive on their own)."""
    return await eventually(
        lambda: scrape(ctl),
        ready,
        timeout=timeout,
        interval=0.05,
        message=lambda got: f"metrics never got there: {got.samples}",
    )


async def test_a_heartbeat_sets_the_gpu_gauges(controller: Controller, tmp_path: Path) -> None:
    before = await scrape(controller)
    assert before.value("lmstack_agent_streams_connected") == 0
    assert before.value("lmstack_workers", status="offline") == 0
    async with run_agent(controller, MemoryRuntime(), tmp_path / "agent", name="gpu-a"):
        got = await scrape_until(
            controller,
            lambda s: s.value("lmstack_gpu_utilization_percent", worker="gpu-a", gpu="0"),
        )
        gpu0 = {"worker": "gpu-a", "gpu": "0"}
        assert got.value("lmstack_gpu_utilization_percent", **gpu0) == 42
        assert got.value("lmstack_gpu_temperature_celsius", **gpu0) == 61
        assert got.value("lmstack_gpu_memory_used_bytes", **gpu0) == 10 * GIB
        assert got.value("lmstack_gpu_memory_total_bytes", **gpu0) == 80 * GIB
        assert got.value("lmstack_gpu_temperature_celsius", worker="gpu-a", gpu="1") == 35
        assert got.value("lmstack_agent_streams_connected") == 1
        assert got.value("lmstack_workers", status="online") == 1
    after = await scrape_until(controller, lambda s: s.value("lmstack_workers", status="offline"))
    assert after.value("lmstack_workers", status="online") == 0
    assert after.value("lmstack_agent_streams_connected") == 0
    # A worker that left has no GPU series any more.
    assert after.label_values("lmstack_gpu_memory_total_bytes", "worker") == set()


async def test_deploy_counts_commands_latency_and_deployments(
    controller: Controller, tmp_path: Path
) -> None:
    async with run_agent(controller, MemoryRuntime(), tmp_path / "agent") as agent:
        status, created = await controller.admin(
            "POST",
            "/api/deployments",
            json={"name": "m1", "model": "org/model", "worker_id": agent.worker_id},
        )
        assert status == 201, created
        got = await scrape_until(
            controller, lambda s: s.value("lmstack_deployments", status="running", backend="vllm")
        )
        assert got.value("lmstack_deployments", status="running", backend="vllm") == 1
        assert got.value("lmstack_deployments", status="pending", backend="vllm") == 0
        assert got.value("lmstack_agent_commands_sent_total", command="deploy") == 1
        assert got.value("lmstack_agent_command_duration_seconds_count", command="deploy") == 1
        assert got.value("lmstack_agent_command_duration_seconds_sum", command="deploy") > 0

        status, _ = await controller.admin("GET", f"/api/workers/{agent.worker_id}/containers")
        assert status == 200
        got = await scrape(controller)
        listed = {"command": "list_containers"}
        assert got.value("lmstack_agent_commands_sent_total", **listed) == 1
        assert got.value("lmstack_agent_command_duration_seconds_count", **listed) == 1
