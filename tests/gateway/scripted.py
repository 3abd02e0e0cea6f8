"""A scripted engine for gateway tests: a TCP server on 127.0.0.1 that runs a
handler per connection, which reads requests and sends exact bytes, so a test
decides what the gateway receives (a refusal, half an answer, a stream cut
after its first event) and sees what the engine was sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request as the engine reads it; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise AssertionError(f"the client sent half a request: {exc.partial!r}") from exc
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, path, version = request_line.split(" ")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, version, headers, body)


@dataclass(eq=False)
class Peer:
    """One connection the engine accepted."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    eof: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Request | None:
        """The next request, or None once the client closed the connection."""
        try:
            request = await read_request(self.reader)
        except ConnectionResetError:
            request = None
        if request is None:
            self.eof.set()
        else:
            self.requests.append(request)
        return request

    async def wait_eof(self) -> bytes:
        """Wait until the client closes the connection; what it sent meanwhile."""
        try:
            rest = await self.reader.read()
        except ConnectionResetError:
            rest = b""
        self.eof.set()
        return rest

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[None]]


class Engine:
    """A TCP server on an ephemeral port running ``handler`` per connection;
    the connection is closed when the handler returns."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.port = 0

    @property
    def accepted(self) -> int:
        return len(self.peers)

    async def start(self, host: str) -> None:
        self._server = await asyncio.start_server(self._accept, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._serve(peer)
        except asyncio.CancelledError:
            pass  # stopped by close(); end quietly rather than log a cancelled task
        finally:
            self._tasks.discard(task)

    async def _serve(self, peer: Peer) -> None:
        try:
            await self._handler(peer)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            peer.writer.close()
            with contextlib.suppress(ConnectionError):
                await peer.writer.wait_closed()


class Engines:
    def __init__(self) -> None:
        self.started: list[Engine] = []

    async def start(self, handler: Handler, host: str = HOST) -> Engine:
        engine = Engine(handler)
        await engine.start(host)
        self.started.append(engine)
        return engine


def answer(
    body: bytes = b"{}", *, status: str = "200 OK", headers: str = "Content-Type: application/json"
) -> bytes:
    head = f"HTTP/1.1 {status}\r\n{headers}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
