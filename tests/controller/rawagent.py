"""A hand-driven gRPC client for protocol-level tests: it sends exactly the
messages a test gives it, so tests can play a silent, wrong or old agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from shared import PROTOCOL_VERSION
from shared.proto.lmstack.v1 import agent_pb2, agent_pb2_grpc


def hello(name: str = "raw-agent", **fields: object) -> agent_pb2.AgentMessage:
    values: dict[str, object] = {
        "name": name,
        "agent_version": "0.1.0",
        "protocol_version": PROTOCOL_VERSION,
        "advertise_address": "127.0.0.1",
    }
    values.update(fields)
    return agent_pb2.AgentMessage(hello=agent_pb2.Hello(**values))  # type: ignore[arg-type]


class RawAgent:
    def __init__(self, target: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        self.call = stub.Connect(self._messages(), metadata=(("authorization", f"Bearer {token}"),))

    async def _messages(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (message := await self._outbox.get()) is not None:
            yield message

    def send(self, message: agent_pb2.AgentMessage) -> None:
        self._outbox.put_nowait(message)

    async def read(self, timeout: float = 5.0) -> agent_pb2.ControllerMessage:
        message = await asyncio.wait_for(self.call.read(), timeout)
        assert isinstance(message, agent_pb2.ControllerMessage), message
        return message

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(Exception):
            await self._channel.close()
