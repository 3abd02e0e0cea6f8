"""A controller double for the agent's tests: a real grpc.aio server on port 0.

``StubController`` implements ``AgentService``: it checks the join token,
answers Hello with Welcome, records every message agents send and lets a test
push commands down the live stream. ``FakeGpuReader`` stands in for NVML, the
one seam that cannot be real on a host without GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from agent.gpu import GpuDevice, GpuStats
from shared.proto.lmstack.v1 import agent_pb2, agent_pb2_grpc
from tests.waiting import eventually

TOKEN = "join-secret"
WORKER_ID = "worker-1"

_Context = grpc.aio.ServicerContext[agent_pb2.AgentMessage, agent_pb2.ControllerMessage]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout``
    (``tests.waiting.eventually``, polled as often as these tests always were)."""
    await eventually(predicate, timeout=timeout, interval=0.005)


@dataclass
class StubController(agent_pb2_grpc.AgentServiceServicer):
    token: str = TOKEN
    worker_id: str = WORKER_ID
    cluster_id: str = ""
    # Both 0: the agent falls back to its own (sub-second, in tests) interval.
    heartbeat_interval_seconds: int = 0
    heartbeat_interval_ms: int = 0
    # When set, every Connect is refused with FAILED_PRECONDITION and this text.
    refuse_protocol: str = ""
    attempts: int = 0
    authorizations: list[str] = field(default_factory=list)
    hellos: list[agent_pb2.Hello] = field(default_factory=list)
    messages: list[agent_pb2.AgentMessage] = field(default_factory=list)
    disconnects: int = 0
    _outbound: asyncio.Queue[agent_pb2.ControllerMessage | None] | None = None

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: _Context
    ) -> AsyncIterator[agent_pb2.ControllerMessage]:
        self.attempts += 1
        metadata = dict(context.invocation_metadata() or ())
        authorization = str(metadata.get("authorization", ""))
        self.authorizations.append(authorization)
        # A refusal is sent only once Hello has been read. Ended earlier, the call can
        # finish while the agent's Hello is still being written; grpc.aio then fails
        # that write and reports INTERNAL ("Internal error from Core") instead of the
        # refusal, and the agent rightly retries what looks like a lost connection.
        first = await anext(request_iterator)
        if authorization != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid join token")
        if self.refuse_protocol:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse_protocol)
        assert first.WhichOneof("payload") == "hello", first
        self.hellos.append(first.hello)
        yield agent_pb2.ControllerMessage(
            welcome=agent_pb2.Welcome(
                worker_id=self.worker_id,
                cluster_id=self.cluster_id,
                heartbeat_interval_seconds=self.heartbeat_interval_seconds,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
                protocol_version=1,
            )
        )
        outbound: asyncio.Queue[agent_pb2.ControllerMessage | None] = asyncio.Queue()
        self._outbound = outbound
        reader = asyncio.create_task(self._receive(request_iterator, outbound))
        try:
            while (command := await outbound.get()) is not None:
                yield command
        finally:
            self.disconnects += 1
            if self._outbound is outbound:
                self._outbound = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _receive(
        self,
        request_iterator: AsyncIterator[agent_pb2.AgentMessage],
        outbound: asyncio.Queue[agent_pb2.ControllerMessage | None],
    ) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for message in request_iterator:
                self.messages.append(message)
        outbound.put_nowait(None)  # the agent hung up: end our side too

    # -- what tests use --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._outbound is not None

    def push(self, message: agent_pb2.ControllerMessage) -> None:
        assert self._outbound is not None, "no agent connected"
        self._outbound.put_nowait(message)

    def heartbeats(self) -> list[agent_pb2.Heartbeat]:
        return [m.heartbeat for m in self.messages if m.WhichOneof("payload") == "heartbeat"]

    def statuses(self, deployment_id: str) -> list[agent_pb2.DeploymentStatus]:
        return [
            m.deployment_status
            for m in self.messages
            if m.WhichOneof("payload") == "deployment_status"
            and m.deployment_status.deployment_id == deployment_id
        ]

    def status_names(self, deployment_id: str) -> list[str]:
        return [status.status for status in self.statuses(deployment_id)]

    def instance_statuses(self, instance_id: str) -> list[agent_pb2.DeploymentStatus]:
        return [
            m.deployment_status
            for m in self.messages
            if m.WhichOneof("payload") == "deployment_status"
            and m.deployment_status.instance_id == instance_id
        ]

    def instance_status_names(self, instance_id: str) -> list[str]:
        return [status.status for status in self.instance_statuses(instance_id)]

    def logs_result(self, request_id: str) -> agent_pb2.LogsResult | None:
        for message in self.messages:
            kind = message.WhichOneof("payload")
            if kind == "logs_result" and message.logs_result.request_id == request_id:
                return message.logs_result
        return None

    def containers_reply(self, request_id: str) -> agent_pb2.Containers | None:
        for message in self.messages:
            kind = message.WhichOneof("payload")
            if kind == "containers" and message.containers.request_id == request_id:
                return message.containers
        return None


class ControllerServer:
    """Runs a ``StubController`` on 127.0.0.1; can go away and come back on the same port."""

    def __init__(self, servicer: StubController) -> None:
        self.servicer = servicer
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, credentials: grpc.ServerCredentials | None = None) -> None:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.servicer, server)
        address = f"127.0.0.1:{self.port}"
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


@dataclass
class FakeGpuReader:
    """Two GPUs with fixed numbers, behind the same ``GpuReader`` protocol as NVML."""

    simulated: bool = False
    closed: bool = False
    stats_calls: int = 0

    def devices(self) -> list[GpuDevice]:
        return [
            GpuDevice(0, "GPU-0000", "NVIDIA H100 80GB HBM3", 80 * 1024**3, "550.54", "12.4"),
            GpuDevice(1, "GPU-0001", "NVIDIA H100 80GB HBM3", 80 * 1024**3, "550.54", "12.4"),
        ]

    def stats(self) -> list[GpuStats]:
        self.stats_calls += 1
        return [
            GpuStats(0, 10 * 1024**3, 80 * 1024**3, utilization=42, temperature=61, power=312.5),
            GpuStats(1, 0, 80 * 1024**3, utilization=0, temperature=35, power=70.0),
        ]

    def close(self) -> None:
        self.closed = True


def deploy_command(
    deployment_id: str,
    *,
    name: str | None = None,
    config_json: str = '{"max_model_len": 4096}',
    host_port: int = 40001,
    instance_id: str = "",
    restarts: int = 0,
) -> agent_pb2.ControllerMessage:
    """A Deploy; without ``instance_id`` as a controller of protocol 1 sent it."""
    return agent_pb2.ControllerMessage(
        deploy=agent_pb2.Deploy(
            deployment_id=deployment_id,
            instance_id=instance_id,
            restarts=restarts,
            name=name or f"model-{deployment_id}",
            backend="vllm",
            image="vllm/vllm-openai:latest",
            model="Qwen/Qwen2.5-0.5B-Instruct",
            config_json=config_json,
            host_port=host_port,
            gpu_indices=[0],
            env={"VLLM_LOGGING_LEVEL": "INFO"},
        )
    )


def stop_command(
    deployment_id: str, *, remove: bool = True, instance_id: str = ""
) -> agent_pb2.ControllerMessage:
    return agent_pb2.ControllerMessage(
        stop=agent_pb2.Stop(deployment_id=deployment_id, remove=remove, instance_id=instance_id)
    )
