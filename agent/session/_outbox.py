"""The single writer of one connection's request stream.

Guarantees: the outbox is the only thing that feeds the gRPC request iterator,
so messages are never interleaved mid-write, and they leave in the order they
were sent. ``send`` never blocks and never fails, so any producer on the loop
(heartbeat loop, lanes, request handlers, runtime reporters) may call it.
``close`` ends the iterator after what was queued before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from shared.proto.lmstack.v1 import agent_pb2


class Outbox:
    """A queue drained by the request iterator.

    Unbounded on purpose: producers are few and small (a heartbeat per interval,
    a handful of statuses per command), and a bounded queue would let a stalled
    stream block the runtime's reporters.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()

    def send(self, message: agent_pb2.AgentMessage) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        # Ends the iterator, so gRPC's consumer task finishes instead of
        # waiting forever on a connection that is gone.
        self._queue.put_nowait(None)

    async def messages(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (message := await self._queue.get()) is not None:
            yield message
