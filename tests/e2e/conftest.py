"""End-to-end fixtures: the real controller, ``lmstack-agent`` as its own
process with the Docker runtime, the real Docker engine and the stand-in
engine image. Nothing is mocked.

Every deployment a test creates is named with the session's prefix; teardown
removes every container whose deployment name carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from controller import appkeys
from tests.conftest import AGENT_TOKEN, Controller
from tests.dockerutil import ensure_engine_image, free_port
from tests.waiting import eventually

HEARTBEAT = 0.5


@pytest.fixture(scope="session")
def engine_image() -> str:
    return ensure_engine_image()


@pytest.fixture(scope="session")
def prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def docker_client(engine_image: str, prefix: str) -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="auto")
    try:
        yield client
    finally:
        for container in client.containers.list(
            all=True, filters={"label": "lmstack.managed=true"}
        ):
            if container.labels.get("lmstack.deployment_name", "").startswith(prefix):
                container.remove(force=True)
        client.close()


@contextlib.asynccontextmanager
async def running_controller(data_dir: Path) -> AsyncIterator[Controller]:
    """A controller for Docker e2e tests: its own data directory, gRPC port and
    private slice of engine ports, so parallel sessions do not collide."""
    low = free_port()
    ctl = Controller(
        data_dir=data_dir,
        overrides={
            "heartbeat_interval": HEARTBEAT,
            "agent_request_timeout": 5.0,
            "reconcile_interval": 0.5,  # notices lost workers' deadlines soon
            "grpc_port": free_port(),
            "engine_port_min": low,
            "engine_port_max": low + 20,
        },
    )
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.close()


@pytest.fixture
async def e2e_controller(tmp_path: Path) -> AsyncIterator[Controller]:
    async with running_controller(tmp_path / "data") as ctl:
        yield ctl


@dataclass
class AgentProcess:
    """``lmstack-agent`` run the way systemd runs it."""

    ctl: Controller
    state_dir: Path
    name: str
    token: str = AGENT_TOKEN
    args: tuple[str, ...] = ()  # more flags, e.g. --engine-port-range
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "LMSTACK_HF_CACHE_DIR": str(self.state_dir / "hf-cache"),
            "LMSTACK_ENGINE_READY_TIMEOUT": "30",
            "LMSTACK_RECONNECT_MAX_SECONDS": "0.5",
            **self.env,
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.main",
            "--controller", self.ctl.grpc_target, "--token", self.token,
            "--name", self.name, "--state-dir", str(self.state_dir),
            "--advertise-address", "127.0.0.1", "--log-level", "DEBUG",
            *self.args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    def worker_id(self) -> str:
        path = self.state_dir / "worker_id"
        return path.read_text().strip() if path.exists() else ""

    async def wait_online(self, timeout: float = 20) -> str:
        fleet = self.ctl.app[appkeys.FLEET]

        def online() -> str:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError("agent exited:\n" + "\n".join(self.output))
            worker_id = self.worker_id()
            return worker_id if worker_id and fleet.is_connected(worker_id) else ""

        return await eventually(
            online,
            timeout=timeout,
            interval=0.05,
            message=lambda _: "agent did not join:\n" + "\n".join(self.output),
        )

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


@pytest.fixture
async def agents(
    e2e_controller: Controller, tmp_path: Path, docker_client: docker.DockerClient
) -> AsyncIterator[Any]:
    made: list[AgentProcess] = []

    def make(
        name: str = "e2e-worker",
        token: str = AGENT_TOKEN,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        agent = AgentProcess(
            e2e_controller, tmp_path / f"agent-{name}", name, token, args, env or {}
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.kill()
