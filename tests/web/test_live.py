"""``/ws/status`` and ``/ws/logs/{id}`` against the real controller and a real agent
session (in-memory runtime), over real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller import appkeys
from controller.web import WEB_OPTIONS
from tests.conftest import Controller
from tests.fleetutil import run_agent
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually

WS = aiohttp.ClientWebSocketResponse


@contextlib.asynccontextmanager
async def socket(ctl: Controller, path: str, token: str | None) -> AsyncIterator[WS]:
    assert ctl.http is not None
    async with ctl.http.ws_connect(ctl.url + path) as ws:
        if token is not None:
            await ws.send_json({"type": "auth", "token": token})
            ready = await ws.receive_json(timeout=5)
            assert ready["type"] == "ready", ready
        yield ws


async def next_event(ws: WS, wanted: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The next JSON message for which ``wanted(message)`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_json()
            if wanted(message):
                assert isinstance(message, dict)
                return message


async def closed_with(ws: WS, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code


async def create_deployment(ctl: Controller, worker_id: str, name: str = "tiny") -> str:
    status, body = await ctl.admin(
        "POST",
        "/api/deployments",
        json={"name": name, "model": "stand-in/tiny", "worker_id": worker_id},
    )
    assert status == 201, body
    return str(body["id"])


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize("path", ["/ws/status", "/ws/logs/00000000-0000-0000-0000-000000000000"])
async def test_no_token_is_refused_with_4401(controller: Controller, path: str) -> None:
    controller.app[WEB_OPTIONS].auth_timeout = 0.2
    async with socket(controller, path, None) as ws:
        assert await closed_with(ws) == 4401


async def test_a_wrong_first_message_token_is_refused_with_4401(controller: Controller) -> None:
    async with socket(controller, "/ws/status", None) as ws:
        await ws.send_json({"type": "auth", "token": "lmst_not-a-real-token"})
        message = await ws.receive_json(timeout=5)
        assert message["type"] == "error"
        assert await closed_with(ws) == 4401


async def test_a_wrong_header_token_is_refused_before_the_upgrade(
    controller: Controller,
) -> None:
    assert controller.http is not None
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await controller.http.ws_connect(
            controller.url + "/ws/status", headers={"Authorization": "Bearer lmst_nope"}
        )
    assert refused.value.status == 401


async def test_a_header_token_needs_no_auth_message(controller: Controller) -> None:
    assert controller.http is not None
    async with controller.http.ws_connect(
        controller.url + "/ws/status",
        headers={"Authorization": f"Bearer {controller.admin_token}"},
    ) as ws:
        ready = await ws.receive_json(timeout=5)
        assert ready == {"type": "ready", "user": {"username": "admin", "is_admin": True}}


async def test_socket_closes_when_its_user_is_deleted(controller: Controller) -> None:
    controller.app[WEB_OPTIONS].revalidate_seconds = 0.1
    status, user = await controller.admin(
        "POST", "/api/users", json={"username": "viewer", "password": "viewer-password"}
    )
    assert status == 201
    token = await controller.login("viewer", "viewer-password")
    async with socket(controller, "/ws/status", token) as ws:
        status, _ = await controller.admin("DELETE", f"/api/users/{user['id']}")
        assert status == 204
        assert await closed_with(ws) == 4401


# ---------------------------------------------------------------- /ws/status


async def test_status_pushes_deployment_changes_and_gpu_heartbeats(
    controller: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with (
        socket(controller, "/ws/status", controller.admin_token) as ws,
        run_agent(controller, runtime, tmp_path / "agent") as agent,
    ):
        online = await next_event(ws, lambda m: m["type"] == "worker")
        assert online["worker"]["id"] == agent.worker_id
        assert online["worker"]["status"] == "online"

        beat = await next_event(ws, lambda m: m.get("change") == "heartbeat")
        devices = beat["worker"]["gpu_info"]["devices"]
        assert devices[0]["utilization"] == 42 and devices[0]["memory_used"] == 10 * 1024

        deployment_id = await create_deployment(controller, agent.worker_id)
        seen: list[str] = []
        while "running" not in seen:
            event = await next_event(ws, lambda m: m["type"] == "deployment")
            assert event["deployment"]["id"] == deployment_id
            seen.append(event["deployment"]["status"])
        assert seen[0] == "pending" and seen.index("starting") < seen.index("running")

        await controller.admin("DELETE", f"/api/deployments/{deployment_id}")
        deleted = await next_event(ws, lambda m: m["type"] == "deployment_deleted")
        assert deleted["id"] == deployment_id
    # The subscription went away with the socket.
    await eventually(lambda: controller.app[appkeys.FLEET].events.subscribers == 0)


# ---------------------------------------------------------------- /ws/logs


async def test_logs_follow_live_and_close_when_the_deployment_is_deleted(
    controller: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with run_agent(controller, runtime, tmp_path / "agent") as agent:
        deployment_id = await create_deployment(controller, agent.worker_id)
        path = f"/ws/logs/{deployment_id}?tail=50"
        async with socket(controller, path, controller.admin_token) as ws:
            first = await next_event(ws, lambda m: m["type"] == "logs")
            assert "engine vllm serving stand-in/tiny" in first["data"]
            await eventually(lambda: runtime.followers(deployment_id) == 1)
            runtime.append_log(deployment_id, "INFO: 3 requests running")
            more = await next_event(ws, lambda m: m["type"] == "logs")
            assert more["data"] == "INFO: 3 requests running\n"

            status, _ = await controller.admin("DELETE", f"/api/deployments/{deployment_id}")
            assert status == 204
            assert await closed_with(ws) == 4404
        # The agent stopped following (its container is gone, or StopFollow).
        await eventually(lambda: runtime.followers(deployment_id) == 0)


async def test_leaving_a_log_socket_stops_the_agents_follow(
    controller: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with run_agent(controller, runtime, tmp_path / "agent") as agent:
        deployment_id = await create_deployment(controller, agent.worker_id)
        async with socket(controller, f"/ws/logs/{deployment_id}", controller.admin_token) as ws:
            await next_event(ws, lambda m: m["type"] == "logs")
            await eventually(lambda: runtime.followers(deployment_id) == 1)
        await eventually(lambda: runtime.followers(deployment_id) == 0)
        session = controller.app[appkeys.FLEET].session(agent.worker_id)
        await eventually(lambda: not session._follows)


async def test_logs_of_an_unknown_deployment_close_with_4404(controller: Controller) -> None:
    path = "/ws/logs/00000000-0000-0000-0000-000000000000"
    async with socket(controller, path, controller.admin_token) as ws:
        assert await closed_with(ws) == 4404


async def test_logs_of_a_non_uuid_answer_404_before_the_upgrade(controller: Controller) -> None:
    assert controller.http is not None
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await controller.http.ws_connect(controller.url + "/ws/logs/not-an-id")
    assert refused.value.status == 404


async def test_logs_say_why_while_the_worker_is_offline(
    controller: Controller, tmp_path: Path
) -> None:
    runtime = MemoryRuntime()
    async with run_agent(controller, runtime, tmp_path / "agent") as agent:
        deployment_id = await create_deployment(controller, agent.worker_id)
        worker_id = agent.worker_id
    await eventually(lambda: not controller.app[appkeys.FLEET].is_connected(worker_id))
    async with socket(controller, f"/ws/logs/{deployment_id}", controller.admin_token) as ws:
        notice = await next_event(ws, lambda m: m["type"] == "notice")
        assert "offline" in notice["message"]


async def test_logs_move_to_the_next_instance_when_a_rollout_replaces_it(
    controller: Controller, tmp_path: Path
) -> None:
    runtimes = [MemoryRuntime(), MemoryRuntime()]
    async with (
        run_agent(controller, runtimes[0], tmp_path / "a", name="gpu-a",
                  engine_port_range="41000-41009"),
        run_agent(controller, runtimes[1], tmp_path / "b", name="gpu-b",
                  engine_port_range="41010-41019"),
    ):  # fmt: skip
        created = await controller.create_deployment(name="tiny", model="stand-in/tiny")
        deployment_id = created["id"]
        path = f"/ws/logs/{deployment_id}?tail=50"
        async with socket(controller, path, controller.admin_token) as ws:
            first = await next_event(ws, lambda m: m["type"] == "instance")
            logs = await next_event(ws, lambda m: m["type"] == "logs")
            assert "engine vllm serving stand-in/tiny" in logs["data"]

            status, body = await controller.admin(
                "PATCH", f"/api/deployments/{deployment_id}", json={"config": {"dtype": "half"}}
            )
            assert status == 200, body
            # The old instance is drained and stopped: the log follows its successor.
            moved = await next_event(ws, lambda m: m["type"] == "instance", timeout=10)
            assert moved["id"] != first["id"]
            again = await next_event(ws, lambda m: m["type"] == "logs")
            assert "engine vllm serving stand-in/tiny" in again["data"]

            async def instances() -> list[tuple[str, str]]:
                _, now = await controller.admin("GET", f"/api/deployments/{deployment_id}")
                return [(i["id"], i["worker_id"]) for i in now["instances"]]

            await eventually(instances, lambda seen: seen == [(moved["id"], moved["worker_id"])])
