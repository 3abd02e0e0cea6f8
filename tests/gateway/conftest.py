"""A gateway in front of the stand-in engine: the real controller, a real agent
session (in-memory runtime: it only reports), and the stand-in engine running
as a process on the host port the controller hands the deployment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from controller import appkeys
from controller.store import Database
from tests.conftest import Controller
from tests.dockerutil import free_port
from tests.fleetutil import RunningAgent, run_agent
from tests.runtime.memory_runtime import MemoryRuntime
from tests.waiting import eventually


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The engine client's tests run on the standard loop and on uvloop (which
    the controller runs on); the other gateway tests on the standard loop."""
    if item.path.name == "test_upstream.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


STANDIN = Path(__file__).resolve().parents[1] / "engine" / "standin_engine.py"
MODEL = "tiny-chat"


@dataclass
class Engine:
    port: int
    proc: asyncio.subprocess.Process
    log: list[str]
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self.reader is not None:
            await self.reader


async def start_engine(port: int, served: str, **env: str) -> Engine:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(STANDIN), "--model", "stand-in/tiny", "--served-model-name", served,
        "--host", "127.0.0.1", "--port", str(port),
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    engine = Engine(port, proc, [])

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            engine.log.append(line.decode().rstrip())

    engine.reader = asyncio.create_task(collect())
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(engine.url + "/health") as resp:
                    return resp.status == 200
            return False

        await eventually(
            healthy,
            interval=0.05,
            message=lambda _: "stand-in engine did not start: " + "\n".join(engine.log),
        )
    return engine


@dataclass
class Stack:
    ctl: Controller
    agent: RunningAgent
    runtime: MemoryRuntime
    engine: Engine
    deployment_id: str
    key: str

    @property
    def base_url(self) -> str:
        return self.ctl.url + "/v1"

    @property
    def db(self) -> Database:
        return self.ctl.app[appkeys.DATABASE]

    def changed(self) -> None:
        """Announce a change of instance rows, as the deployment service does."""
        self.ctl.app[appkeys.FLEET].changed()


async def make_stack(
    tmp_path: Path,
    *,
    overrides: dict[str, Any] | None = None,
    database_url: str = "",
    config: dict[str, Any] | None = None,
    **engine_env: str,
) -> AsyncIterator[Stack]:
    port = free_port()
    ctl = Controller(
        data_dir=tmp_path / "data",
        database_url=database_url,
        overrides={
            "engine_port_min": port,
            "engine_port_max": port,
            "heartbeat_interval": 1.0,
            **(overrides or {}),
        },
    )
    await ctl.start()
    engine = await start_engine(port, MODEL, **engine_env)
    runtime = MemoryRuntime()
    try:
        async with run_agent(ctl, runtime, tmp_path / "agent") as agent:
            created = await ctl.create_deployment(
                name=MODEL, model="stand-in/tiny", worker_id=agent.worker_id, config=config or {}
            )
            _, row = await eventually(
                lambda: ctl.admin("GET", f"/api/deployments/{created['id']}"),
                lambda answer: answer[1]["status"] == "running",
                message=lambda answer: f"deployment never ran: {answer}",
            )
            assert row["port"] == port
            _, key = await ctl.admin("POST", "/api/api-keys", json={"name": "app"})
            yield Stack(ctl, agent, runtime, engine, created["id"], key["key"])
    finally:
        await engine.stop()
        await ctl.close()


@pytest.fixture
async def stack(tmp_path: Path, database_url: str) -> AsyncIterator[Stack]:
    async for value in make_stack(tmp_path, database_url=database_url):
        yield value
