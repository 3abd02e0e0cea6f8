"""Fixtures for the agent's tests: a real gRPC controller double and a session runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.session import AgentSession
from shared.settings import AgentSettings
from tests.agent.controller_stub import TOKEN, ControllerServer, FakeGpuReader, StubController
from tests.runtime.memory_runtime import MemoryRuntime

StartSession = Callable[..., AgentSession]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read LMSTACK_* variables; the developer's shell must not leak in.
    for name in list(os.environ):
        if name.startswith("LMSTACK_") or name == "HF_TOKEN":
            monkeypatch.delenv(name)


@pytest.fixture
def stub() -> StubController:
    return StubController()


@pytest.fixture
async def stub_server(stub: StubController) -> AsyncIterator[ControllerServer]:
    server = ControllerServer(stub)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def settings(stub_server: ControllerServer, state_dir: Path) -> AgentSettings:
    return AgentSettings(
        controller=stub_server.address,
        token=TOKEN,
        name="gpu-host-1",
        state_dir=state_dir,
        heartbeat_interval=0.05,
        reconnect_max_seconds=0.2,
        # The restart policy in miniature: probes every 20 ms, restarts after 50 ms,
        # doubling up to 0.4 s (the defaults are 10 s, 10 s, 5 min).
        health_check_interval=0.02,
        restart_backoff_initial=0.05,
        restart_backoff_max=0.4,
    )


@pytest.fixture
def runtime() -> MemoryRuntime:
    return MemoryRuntime()


@pytest.fixture
def gpus() -> FakeGpuReader:
    return FakeGpuReader()


@pytest.fixture
async def start_session(
    settings: AgentSettings, runtime: MemoryRuntime, gpus: FakeGpuReader
) -> AsyncIterator[StartSession]:
    """Start ``AgentSession.run()`` in a task; cancelled and awaited after the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(session_settings: AgentSettings | None = None, **kwargs: Any) -> AgentSession:
        session = AgentSession(session_settings or settings, runtime, gpus, **kwargs)
        tasks.append(asyncio.create_task(session.run()))
        return session

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def no_gpu_device() -> Iterator[None]:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this host has an NVIDIA driver")
    yield
