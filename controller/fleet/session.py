"""One connected agent's session and the log follows running over it.

Guarantees:
* The session's outbound queue is the only writer of its stream, so commands
  reach the agent in the order they were sent; a closed session refuses to
  send (``ServiceUnavailable``).
* Requests to the agent (logs, container listings) carry a fresh request id;
  each waits at most the given time (→ ``GatewayTimeout``) and fails with
  ``ServiceUnavailable`` as soon as the session closes.
* A log follow receives the chunks the agent sends for its request id; it ends
  on the agent's ``eof``, when the session closes, or when it is stopped. A
  slow reader loses the oldest chunks beyond ``FOLLOW_BUFFER_CHARS``.

Concurrency: everything runs on the controller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import GatewayTimeout, ServiceUnavailable
from shared.proto.lmstack.v1 import agent_pb2

log = logging.getLogger("lmstack.fleet")

# Characters of followed log buffered for a slow reader before the oldest go.
FOLLOW_BUFFER_CHARS = 1024 * 1024


class LogFollow:
    """One FollowLogs in progress: the chunks its agent sent, until it ends."""

    def __init__(self, instance_id: str, deployment_id: str = "") -> None:
        self.request_id = uuid.uuid4().hex
        self.instance_id = instance_id
        self.deployment_id = deployment_id or instance_id
        # Why it ended: None while it runs, "" for the container's end, else the reason.
        self.end_reason: str | None = None
        self.dropped = 0
        self._buffer: deque[str] = deque()
        self._buffered = 0
        self._wake = asyncio.Event()

    def offer(self, chunk: agent_pb2.LogChunk) -> None:
        if chunk.data and self.end_reason is None:
            self._buffer.append(chunk.data)
            self._buffered += len(chunk.data)
            while self._buffered > FOLLOW_BUFFER_CHARS and len(self._buffer) > 1:
                self._buffered -= len(self._buffer.popleft())
                self.dropped += 1
        if chunk.eof:
            self.end(chunk.error)
        self._wake.set()

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._wake.set()

    async def chunks(self) -> AsyncIterator[str]:
        """Every chunk in order; ends (after the buffered ones) when the follow ends."""
        while True:
            while self._buffer:
                data = self._buffer.popleft()
                self._buffered -= len(data)
                yield data
            if self.end_reason is not None:
                return
            self._wake.clear()
            await self._wake.wait()


@dataclass
class AgentSession:
    """One connected agent. Created by the servicer, registered with ``Fleet.attach``."""

    worker_id: str
    name: str
    gpu_devices: list[dict[str, Any]] = field(default_factory=list)
    gpus_simulated: bool = False
    # The host port range the agent declared in Hello; ``None``: none.
    engine_ports: tuple[int, int] | None = None
    # The agent's labels (``--label``), matched by ``config.worker_selector``.
    labels: dict[str, str] = field(default_factory=dict)
    last_seen: float = 0.0
    last_heartbeat: datetime | None = None
    gpu_stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    dirty: bool = False
    outbound: asyncio.Queue[agent_pb2.ControllerMessage | None] = field(
        default_factory=asyncio.Queue
    )
    closed: bool = False
    last_pushed: float = float("-inf")
    _pending: dict[str, asyncio.Future[agent_pb2.AgentMessage]] = field(default_factory=dict)
    _follows: dict[str, LogFollow] = field(default_factory=dict)

    def send(self, message: agent_pb2.ControllerMessage) -> None:
        if self.closed:
            raise ServiceUnavailable(f"Worker '{self.name}' is not connected")
        self.outbound.put_nowait(message)

    def close(self, reason: str) -> None:
        """End the session: the servicer's writer stops, pending requests fail."""
        if self.closed:
            return
        self.closed = True
        self.outbound.put_nowait(None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    ServiceUnavailable(f"Worker '{self.name}' disconnected ({reason})")
                )
        self._pending.clear()
        for follow in self._follows.values():
            follow.end(f"worker '{self.name}' disconnected")
        self._follows.clear()
        log.info("session of worker %s (%s) closed: %s", self.name, self.worker_id, reason)

    async def request(
        self, build: Callable[[str], agent_pb2.ControllerMessage], wait_seconds: float
    ) -> agent_pb2.AgentMessage:
        request_id = uuid.uuid4().hex
        future: asyncio.Future[agent_pb2.AgentMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self.send(build(request_id))
            return await asyncio.wait_for(future, wait_seconds)
        except TimeoutError:
            raise GatewayTimeout(
                f"Worker '{self.name}' did not answer within {wait_seconds:g} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    def resolve(self, request_id: str, reply: agent_pb2.AgentMessage) -> None:
        future = self._pending.get(request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    def start_follow(self, follow: LogFollow, tail: int) -> None:
        self.send(
            agent_pb2.ControllerMessage(
                follow_logs=agent_pb2.FollowLogs(
                    request_id=follow.request_id,
                    deployment_id=follow.deployment_id,
                    instance_id=follow.instance_id,
                    tail=tail,
                )
            )
        )
        self._follows[follow.request_id] = follow

    def stop_follow(self, follow: LogFollow, reason: str = "stopped") -> None:
        """Forget the follow; tell the agent to stop unless it ended already."""
        self._follows.pop(follow.request_id, None)
        if follow.end_reason is None and not self.closed:
            self.send(
                agent_pb2.ControllerMessage(
                    stop_follow=agent_pb2.StopFollow(request_id=follow.request_id)
                )
            )
        follow.end(reason)

    def deliver_chunk(self, chunk: agent_pb2.LogChunk) -> None:
        follow = self._follows.get(chunk.request_id)
        if follow is not None:
            follow.offer(chunk)
            if chunk.eof:
                del self._follows[chunk.request_id]

    def end_follows(self, instance_id: str, reason: str) -> None:
        for follow in [f for f in self._follows.values() if f.instance_id == instance_id]:
            self.stop_follow(follow, reason)

    def gpu_info(self) -> dict[str, Any]:
        devices = [{**dev, **self.gpu_stats.get(dev["index"], {})} for dev in self.gpu_devices]
        return {"count": len(devices), "simulated": self.gpus_simulated, "devices": devices}
