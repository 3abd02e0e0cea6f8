"""Real agents for controller tests: the agent's own ``AgentSession`` over real
gRPC, with an in-memory or Docker runtime behind it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.gpu import GpuReader
from agent.session import AgentSession
from agent.types import Runtime
from controller import appkeys
from shared.settings import AgentSettings
from tests.agent.controller_stub import FakeGpuReader
from tests.conftest import AGENT_TOKEN, Controller
from tests.waiting import eventually

__all__ = ["RunningAgent", "run_agent", "wait_until", "worker_view"]

# The name older tests know ``eventually`` by.
wait_until = eventually


@dataclass
class RunningAgent:
    session: AgentSession
    task: asyncio.Task[None]

    @property
    def worker_id(self) -> str:
        return self.session.worker_id


async def worker_view(ctl: Controller, worker_id: str) -> dict[str, Any]:
    status, body = await ctl.admin("GET", f"/api/workers/{worker_id}")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


@contextlib.asynccontextmanager
async def run_agent(
    ctl: Controller,
    runtime: Runtime,
    state_dir: Path,
    *,
    name: str = "gpu-worker-01",
    token: str = AGENT_TOKEN,
    gpus: GpuReader | None = None,
    wait_online: bool = True,
    **extra_settings: Any,
) -> AsyncIterator[RunningAgent]:
    """A real agent session in this process; ``extra_settings`` are further agent
    settings (TLS, ...)."""
    settings = AgentSettings(
        controller=ctl.grpc_target,
        token=token,
        name=name,
        state_dir=state_dir,
        advertise_address="127.0.0.1",
        heartbeat_interval=0.1,
        reconnect_max_seconds=0.2,
        **extra_settings,
    )
    session = AgentSession(settings, runtime, gpus or FakeGpuReader())
    task = asyncio.create_task(session.run())
    agent = RunningAgent(session, task)
    try:
        if wait_online:
            await eventually(lambda: bool(session.worker_id) and _online(ctl, session.worker_id))
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _online(ctl: Controller, worker_id: str) -> bool:
    return ctl.app[appkeys.FLEET].is_connected(worker_id)
