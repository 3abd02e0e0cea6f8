"""The controller's fleet over real gRPC: agents (the real ``AgentSession`` with
an in-memory runtime) join, report, take commands and come and go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from agent.session import AuthenticationFailed
from controller import appkeys
from controller.fleet.hub import MISSED_HEARTBEATS
from shared import PROTOCOL_VERSION
from tests.conftest import AGENT_TOKEN, Controller
from tests.controller.rawagent import RawAgent, hello
from tests.fleetutil import run_agent, worker_view
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually


@pytest.fixture
async def fast_controller(tmp_path: Path, database_url: str) -> Any:
    ctl = Controller(
        data_dir=tmp_path / "data",
        database_url=database_url,
        overrides={"heartbeat_interval": 0.2, "agent_request_timeout": 1.0},
    )
    await ctl.start()
    yield ctl
    await ctl.close()


async def deployment(ctl: Controller, deployment_id: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", f"/api/deployments/{deployment_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def wait_status(ctl: Controller, deployment_id: str, wanted: str) -> dict[str, Any]:
    return await eventually(
        lambda: deployment(ctl, deployment_id),
        lambda seen: seen["status"] == wanted,
        message=lambda seen: f"deployment stayed {seen['status']}, wanted {wanted}",
    )


async def test_agent_joins_and_reports_gpus(fast_controller: Controller, tmp_path: Path) -> None:
    ctl = fast_controller
    async with run_agent(ctl, MemoryRuntime(), tmp_path / "agent") as agent:
        worker = await worker_view(ctl, agent.worker_id)
        assert worker["status"] == "online"
        assert worker["name"] == "gpu-worker-01"
        assert worker["gpu_info"]["count"] == 2
        gpu0 = worker["gpu_info"]["devices"][0]
        assert gpu0["name"] == "NVIDIA H100 80GB HBM3" and gpu0["memory"] == 80 * 1024
        assert worker["system_info"]["cpu_count"] >= 1
        assert worker["advertise_address"] == "127.0.0.1"
        # Heartbeat statistics reach the store within a few intervals (written by
        # the fleet's loop: a flush of ours may return while its write is in flight).
        fleet = ctl.app[appkeys.FLEET]
        await eventually(lambda: fleet.session(agent.worker_id).gpu_stats != {})

        async def flushed() -> dict[str, Any]:
            await fleet.flush()
            return await worker_view(ctl, agent.worker_id)

        worker = await eventually(
            flushed, lambda seen: seen["gpu_info"]["devices"][0]["utilization"] is not None
        )
        assert worker["gpu_info"]["devices"][0]["utilization"] == 42
        assert worker["gpu_info"]["devices"][0]["memory_used"] == 10 * 1024
        assert worker["gpu_info"]["devices"][0]["temperature"] == 61
    await wait_status_of_worker(ctl, agent.worker_id, "offline")


async def wait_status_of_worker(ctl: Controller, worker_id: str, wanted: str) -> None:
    await eventually(
        lambda: worker_view(ctl, worker_id),
        lambda seen: seen["status"] == wanted,
        message=f"worker never became {wanted}",
    )


async def test_deployment_lifecycle_over_the_stream(
    fast_controller: Controller, tmp_path: Path
) -> None:
    ctl = fast_controller
    runtime = MemoryRuntime()
    async with run_agent(ctl, runtime, tmp_path / "agent") as agent:
        body = {
            "name": "llama",
            "model": "meta-llama/Llama-2-7b-chat-hf",
            "worker_id": agent.worker_id,
            "config": {
                "tensor_parallel_size": 2,
                "gpu_memory_utilization": 0.45,
                "env": {"A": "1"},
                "extra_args": ["--x"],
            },
        }
        created = await ctl.create_deployment(**body)
        running = await wait_status(ctl, created["id"], "running")
        assert running["container_id"] and running["port"] == 40000
        assert running["gpu_indices"] == [0, 1]
        spec = runtime.specs[created["id"]]
        assert spec.name == "llama" and spec.host_port == 40000
        assert spec.gpu_indices == (0, 1) and spec.env == {"A": "1"}
        assert spec.config.extra_args == ["--x"]

        status, logs = await ctl.admin("GET", f"/api/deployments/{created['id']}/logs")
        assert status == 200 and "serving meta-llama/Llama-2-7b-chat-hf" in logs["logs"]
        status, containers = await ctl.admin("GET", f"/api/workers/{agent.worker_id}/containers")
        assert status == 200
        [container] = containers["containers"]
        assert container["id"] == running["container_id"]
        assert container["name"] == f"lmstack-llama-{container['instance_id'][:8]}"
        assert container["status"] == "running"

        # A second deployment shares a GPU (0.45 + 0.5) and gets the next port.
        body2 = {
            "name": "small",
            "model": "m",
            "worker_id": agent.worker_id,
            "config": {"gpu_memory_utilization": 0.5},
        }
        created2 = await ctl.create_deployment(**body2)
        small = await wait_status(ctl, created2["id"], "running")
        assert small["port"] == 40001 and small["gpu_indices"] == [0]
        assert runtime.specs[created2["id"]].gpu_indices == (0,)

        status, _ = await ctl.admin("DELETE", f"/api/deployments/{created['id']}")
        assert status == 204
        await eventually(lambda: ("stopped", created["id"]) in runtime.events)
        assert created["id"] not in {c.deployment_id for c in await runtime.list_containers()}


async def test_engine_exit_is_reported_as_error(
    fast_controller: Controller, tmp_path: Path
) -> None:
    ctl = fast_controller
    runtime = MemoryRuntime()
    async with run_agent(ctl, runtime, tmp_path / "agent") as agent:
        created = await ctl.create_deployment(name="crashy", model="m", worker_id=agent.worker_id)
        await wait_status(ctl, created["id"], "running")
        runtime.exit_container(created["id"], 3, "CUDA out of memory")
        failed = await wait_status(ctl, created["id"], "error")
        assert "3" in failed["status_message"]
        assert "CUDA out of memory" in failed["status_message"]


async def test_offline_worker_answers_503(fast_controller: Controller, tmp_path: Path) -> None:
    ctl = fast_controller
    async with run_agent(ctl, MemoryRuntime(), tmp_path / "agent") as agent:
        created = await ctl.create_deployment(name="a", model="m", worker_id=agent.worker_id)
        await wait_status(ctl, created["id"], "running")
    await eventually(lambda: not ctl.app[appkeys.FLEET].is_connected(agent.worker_id))
    status, body = await ctl.admin(
        "POST", "/api/deployments", json={"name": "b", "model": "m", "worker_id": agent.worker_id}
    )
    assert status == 503 and "offline" in body["detail"]
    status, body = await ctl.admin("GET", f"/api/deployments/{created['id']}/logs")
    assert status == 503
    status, body = await ctl.admin("GET", f"/api/workers/{agent.worker_id}/containers")
    assert status == 503


async def test_reconnect_keeps_identity_and_reconciles(
    fast_controller: Controller, tmp_path: Path
) -> None:
    """Agent away: a deployment deleted meanwhile is removed on return, a
    running one is adopted (deploy is a no-op), and the worker id is kept."""
    ctl = fast_controller
    runtime = MemoryRuntime()
    state = tmp_path / "agent"
    async with run_agent(ctl, runtime, state) as agent:
        worker_id = agent.worker_id
        ids = []
        for name in ("keep", "drop"):
            created = await ctl.create_deployment(name=name, model="m", worker_id=worker_id)
            await wait_status(ctl, created["id"], "running")
            ids.append(created["id"])
    keep, drop = ids
    kept_container = {c.deployment_id: c for c in await runtime.list_containers()}[keep]
    await eventually(lambda: not ctl.app[appkeys.FLEET].is_connected(worker_id))
    status, _ = await ctl.admin("DELETE", f"/api/deployments/{drop}")
    assert status == 204

    async with run_agent(ctl, runtime, state) as agent:
        assert agent.worker_id == worker_id
        await eventually(lambda: ("stopped", drop) in runtime.events)
        containers = {c.deployment_id: c for c in await runtime.list_containers()}
        assert set(containers) == {keep}
        assert containers[keep].container_id == kept_container.container_id
        assert containers[keep].started_at == kept_container.started_at
        _, workers = await ctl.admin("GET", "/api/workers")
        assert [w["id"] for w in workers["items"]] == [worker_id]


async def test_controller_restart_agents_reconnect(
    fast_controller: Controller, tmp_path: Path
) -> None:
    ctl = fast_controller
    ctl.overrides["grpc_port"] = 0
    runtime = MemoryRuntime()
    async with run_agent(ctl, runtime, tmp_path / "agent") as agent:
        created = await ctl.create_deployment(name="a", model="m", worker_id=agent.worker_id)
        await wait_status(ctl, created["id"], "running")
        port = ctl.app[appkeys.GRPC_PORT]
        ctl.overrides["grpc_port"] = port  # the agent dials the same address again
        await ctl.restart()
        fleet = ctl.app[appkeys.FLEET]
        await eventually(lambda: fleet.is_connected(agent.worker_id), timeout=10)
        worker = await worker_view(ctl, agent.worker_id)
        assert worker["status"] == "online"
        assert (await deployment(ctl, created["id"]))["status"] == "running"
        assert len(await runtime.list_containers()) == 1


async def test_wrong_token_is_refused(fast_controller: Controller, tmp_path: Path) -> None:
    ctl = fast_controller
    runtime = MemoryRuntime()
    with pytest.raises(AuthenticationFailed):
        async with run_agent(
            ctl, runtime, tmp_path / "a", token="wrong", wait_online=False
        ) as agent:
            await agent.task
    _, workers = await ctl.admin("GET", "/api/workers")
    assert workers["items"] == []


async def test_protocol_errors(fast_controller: Controller) -> None:
    ctl = fast_controller
    old = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    old.send(hello(protocol_version=PROTOCOL_VERSION + 1, agent_version="9.0.0"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await old.read()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"protocol {PROTOCOL_VERSION}" in str(info.value.details())
    assert "9.0.0" in str(info.value.details())
    await old.close()

    rude = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    rude.send(hello().__class__(heartbeat={}))  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rude.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await rude.close()


async def test_silent_agent_goes_offline_and_requests_time_out(
    fast_controller: Controller,
) -> None:
    ctl = fast_controller
    raw = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    raw.send(hello("silent"))
    welcome = (await raw.read()).welcome
    assert welcome.heartbeat_interval_ms == 200
    fleet = ctl.app[appkeys.FLEET]
    assert fleet.is_connected(welcome.worker_id)
    # Silent for just under 3 intervals: still online.
    window = MISSED_HEARTBEATS * fleet.heartbeat_interval
    ctl.clock.advance(window * 0.99)
    fleet.expire_silent()
    assert fleet.is_connected(welcome.worker_id)
    # No heartbeats for 3 intervals: the liveness loop closes the stream, offline.
    ctl.clock.advance(window * 0.02)
    await eventually(lambda: not fleet.is_connected(welcome.worker_id))
    await wait_status_of_worker(ctl, welcome.worker_id, "offline")
    await raw.close()


async def test_request_timeout_is_504(tmp_path: Path) -> None:
    ctl = Controller(
        data_dir=tmp_path / "data",
        overrides={"heartbeat_interval": 5, "agent_request_timeout": 0.3},
    )
    await ctl.start()
    try:
        raw = RawAgent(ctl.grpc_target, AGENT_TOKEN)
        raw.send(hello("mute"))
        welcome = (await raw.read()).welcome
        status, body = await ctl.admin("GET", f"/api/workers/{welcome.worker_id}/containers")
        assert status == 504 and "did not answer" in body["detail"]
        request = await raw.read()
        assert request.WhichOneof("payload") == "list_containers"
        await raw.close()
    finally:
        await ctl.close()
