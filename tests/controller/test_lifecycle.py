"""Start-up, restart and shutdown of the controller as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.app import create_app
from controller.bootstrap import ADMIN_PASSWORD_FILE
from controller.main import parse_args
from shared.settings import ControllerSettings
from tests.conftest import AGENT_TOKEN, Controller
from tests.controller.rawagent import RawAgent, hello
from tests.dockerutil import free_port
from tests.scheduler.workers import raw_worker
from tests.waiting import eventually


async def test_data_and_login_tokens_survive_restart(controller: Controller) -> None:
    token = controller.admin_token
    _, key = await controller.admin("POST", "/api/api-keys", json={"name": "k"})
    # Creating places the deployment, so a worker must be online for it.
    async with raw_worker(controller, "gpu-01"):
        created = await controller.create_deployment(name="m", model="x")
    _, user = await controller.admin(
        "POST", "/api/users", json={"username": "u", "password": "password-u"}
    )
    await controller.call("GET", "/api/workers", token=key["key"])

    await controller.restart()

    status, me = await controller.call("GET", "/api/auth/me", token=token)
    assert status == 200 and me["username"] == "admin"
    status, _ = await controller.call("GET", "/api/auth/me", token=key["key"])
    assert status == 200
    _, one = await controller.admin("GET", f"/api/deployments/{created['id']}")
    assert one["name"] == "m"
    _, users = await controller.admin("GET", "/api/users")
    assert user["id"] in [u["id"] for u in users["items"]]
    # last_used buffered before the restart was flushed at shutdown.
    _, keys = await controller.admin("GET", "/api/api-keys")
    assert keys["items"][0]["last_used"] is not None


async def test_generated_admin_password_written_once(tmp_path: Path) -> None:
    ctl = Controller(data_dir=tmp_path / "data", overrides={"admin_password": ""})
    settings = ctl.settings()
    assert not settings.admin_password.get_secret_value()
    # Start without the fixture's fixed password: the password comes from the file.
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        path = settings.data_dir / ADMIN_PASSWORD_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 16
    finally:
        await runner.cleanup()
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        assert path.read_text().strip() == password
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            login = {"username": "admin", "password": password}
            async with http.post(url + "/api/auth/login", json=login) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


def test_settings_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSTACK_PORT", "9999")
    monkeypatch.setenv("LMSTACK_DATABASE_URL", "postgresql+asyncpg://lm:secret@db/lm")
    monkeypatch.setenv("LMSTACK_ADMIN_PASSWORD", "hunter2-hunter2")
    settings = ControllerSettings()
    assert settings.port == 9999
    assert settings.effective_database_url().startswith("postgresql+asyncpg://")
    masked = settings.masked()
    assert "secret" not in str(masked) and "hunter2" not in str(masked)
    assert masked["admin_password"] == "***"
    assert ControllerSettings(**parse_args(["--port", "7000"])).port == 7000
    monkeypatch.delenv("LMSTACK_DATABASE_URL")
    default = ControllerSettings(data_dir=Path("/x"))
    assert default.effective_database_url() == "sqlite+aiosqlite:////x/lmstack.db"


async def test_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LMSTACK_BCRYPT_ROUNDS": "4", "LMSTACK_GRPC_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.main", "--port", str(port),
        "--data-dir", str(tmp_path / "data"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:

            async def health() -> Any:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        return await resp.json()
                except aiohttp.ClientConnectionError:
                    return None

            answer = await eventually(health, interval=0.1, message="controller did not start")
            assert answer == {"status": "healthy"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    output = (await proc.stdout.read()).decode()
    assert "initial_admin_password" in output
    assert "Traceback" not in output


async def test_ctrl_c_with_an_agent_connected_stops_cleanly(tmp_path: Path) -> None:
    """``make run``'s Ctrl-C: SIGINT while an agent's stream is open ends the
    process with 0 and no traceback (grpc.aio's server once printed
    ``RuntimeError: Event loop is closed`` from its finaliser after uvloop closed)."""
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "LMSTACK_BCRYPT_ROUNDS": "4", "LMSTACK_AGENT_TOKEN": AGENT_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.main", "--port", str(port),
        "--grpc-port", str(grpc_port), "--data-dir", str(tmp_path / "data"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    agent: RawAgent | None = None
    try:
        await _until_healthy(port)
        agent = RawAgent(f"127.0.0.1:{grpc_port}", AGENT_TOKEN)
        agent.send(hello("ctrl-c"))
        assert (await agent.read(10)).WhichOneof("payload") == "welcome"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if agent is not None:
            await agent.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    output = (await proc.stdout.read()).decode()
    assert "worker ctrl-c" in output  # the stream was live when the signal came
    assert "Traceback" not in output and "Event loop is closed" not in output, output


async def _until_healthy(port: int) -> None:
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(healthy, timeout=20, message="the controller did not start")
