"""Workers for placement tests over the real controller: ``RawAgent`` sessions
that say Hello with as many GPUs as a test wants, read their Deploy commands
and never report a status, so nothing but the test changes the store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import select

from controller import appkeys
from controller.store import Worker as WorkerRow
from shared.proto.lmstack.v1 import agent_pb2
from tests.conftest import AGENT_TOKEN, Controller
from tests.controller.rawagent import RawAgent, hello
from tests.waiting import DEFAULT_TIMEOUT, eventually

GIB = 1024**3


@dataclass
class Worker:
    id: str
    name: str
    agent: RawAgent
    deploys: list[agent_pb2.Deploy] = field(default_factory=list)

    async def next_deploy(self, timeout: float = 5.0) -> agent_pb2.Deploy:
        while True:
            message = await self.agent.read(timeout)
            if message.WhichOneof("payload") == "deploy":
                self.deploys.append(message.deploy)
                return message.deploy


def gpu_devices(count: int, memory_gib: int = 80) -> list[agent_pb2.GpuDevice]:
    return [
        agent_pb2.GpuDevice(
            index=i, uuid=f"GPU-{i:04d}", name="NVIDIA H100", memory_total_bytes=memory_gib * GIB
        )
        for i in range(count)
    ]


@contextlib.asynccontextmanager
async def raw_worker(
    ctl: Controller, name: str, gpus: int = 2, *, simulated: bool = False
) -> AsyncIterator[Worker]:
    """An online worker named ``name`` with ``gpus`` GPUs, for as long as the block runs."""
    agent = RawAgent(ctl.grpc_target, AGENT_TOKEN)
    worker_id = ""
    try:
        agent.send(hello(name, gpus=gpu_devices(gpus), gpus_simulated=simulated))
        welcome = await agent.read()
        worker_id = welcome.welcome.worker_id
        fleet = ctl.app[appkeys.FLEET]
        await eventually(lambda: fleet.is_connected(worker_id))
        yield Worker(worker_id, name, agent)
    finally:
        await agent.close()
        if worker_id and ctl.runner is not None:
            await _wait_offline(ctl, worker_id)


async def _wait_offline(ctl: Controller, worker_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Until the controller has recorded the disconnect, so that no database write
    of it is still running when a test stops the controller."""

    async def stored_status() -> str | None:
        async with ctl.app[appkeys.DATABASE].session() as session:
            return await session.scalar(select(WorkerRow.status).where(WorkerRow.id == worker_id))

    await eventually(
        stored_status,
        lambda status: status == "offline",
        timeout=timeout,
        message=f"worker {worker_id} was not recorded offline",
    )
