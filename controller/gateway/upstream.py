"""The gateway's HTTP/1.1 client to engines: one keep-alive pool for all of them.

Why not ``aiohttp.ClientSession``: the hop to an engine is narrow (POST a JSON
body to a known host and port, read a JSON answer or an SSE stream), and it is
on every request's path. On the 2-core bench machine a bare aiohttp server
forwarding with ``aiohttp.ClientSession`` added 0.62 ms p50 at concurrency 1
and reached 0.47-0.71x the engine's direct throughput; the same server
forwarding with this client added 0.29 ms and reached 0.98x (``bench/gateway.py``
measures the real gateway). One connection, its parsing and its
back-pressure are ``connection.Connection``'s (see its guarantees).

Guarantees:
* One pool keyed by (host, port); idle connections are reused most recently
  used first, at most ``max_idle_per_origin`` are kept per engine.
* An idle connection the engine closes leaves the pool when it closes (no
  reaper task); one idle for longer than ``idle_seconds`` is closed instead of
  reused (uvicorn, which vLLM and SGLang run on, drops idle connections after
  5 s).
* A request whose reused connection closes before any byte of the answer
  arrived is sent again on another connection: the engine closed that idle
  connection while we wrote, so it never saw the request. A fresh connection
  is never retried.
* Only a connection whose answer was read to its end, and which the engine
  keeps alive, returns to the pool; any other (an abandoned stream, a
  cancelled call, a broken answer) is closed.

Errors: a refused or broken connection or a malformed answer raises
``UpstreamError``; ``NoAnswer`` (one) when not a byte of an answer arrived
(refused, connect timeout, reset or closed before answering), so the caller
may send the request to another engine. Time limits past connecting are the
caller's (``asyncio.timeout``), and a cancelled call closes its connection.

Concurrency: event loop only; one request at a time per connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from controller.gateway.connection import Connection, Origin
from shared.errors import UpstreamError

__all__ = ["EngineClient", "EngineResponse", "NoAnswer"]


class NoAnswer(UpstreamError):
    """Not a byte of an answer arrived: the engine could not be reached, or
    closed or reset the connection before answering."""


class EngineResponse:
    """An engine's answer, its headers read, its body still on the wire."""

    def __init__(self, connection: Connection, client: EngineClient) -> None:
        self._connection = connection
        self._client = client
        self._done = False
        self._released = False
        self.status = connection.status
        self.headers = connection.headers

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    @property
    def finished(self) -> bool:
        """Whether the body has been read to its end."""
        return self._connection.complete and self._done

    async def read_chunk(self) -> bytes:
        """The next piece of the body as the engine sent it; ``b""`` at its end."""
        chunk = await self._connection.read_chunk()
        if not chunk:
            self._done = True
        return chunk

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        parts = []
        try:
            while chunk := await self.read_chunk():
                parts.append(chunk)
        finally:
            self.release()
        return b"".join(parts)

    def release(self) -> None:
        """Hand the connection back: to the pool if reusable, else closed.
        Only the first release or close counts: the connection may serve
        another request by the time of a second."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        if self._done and connection.complete and connection.keep_alive and connection.usable:
            self._client._put(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Drop the connection, e.g. when the client stopped listening."""
        if not self._released:
            self._released = True
            self._connection.close()


class EngineClient:
    def __init__(
        self,
        *,
        connect_timeout: float,
        idle_seconds: float = 4.0,
        max_idle_per_origin: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle_per_origin
        self._clock = clock
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def idle_connections(self, host: str, port: int) -> int:
        return len(self._idle.get((host, port), ()))

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        body: bytes,
        *,
        content_type: str,
        whole: bool = False,
    ) -> EngineResponse:
        """Send ``body`` and wait for the answer's headers, or with ``whole``
        for the entire answer (a JSON reply: one wake-up instead of two, no
        back-pressure, so only for answers of bounded size)."""
        origin = (host, port)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {_host_header(host, port)}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "User-Agent: lmstack-gateway\r\n\r\n"
        ).encode("latin-1") + body
        while True:
            connection = self._take_idle(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin)
            try:
                connection.send(request, whole=whole)
                await connection.ready()
            except UpstreamError as exc:
                connection.close()
                if connection.got_bytes:
                    raise
                if reused:
                    continue  # closed by the engine while idle: it never saw the request
                raise NoAnswer(str(exc)) from exc
            except BaseException:
                connection.close()
                raise
            return EngineResponse(connection, self)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        # Let the transports run connection_lost before the loop goes away.
        await asyncio.sleep(0)

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = self._clock()
        while idle:
            connection = idle.pop()
            if not connection.usable:
                continue
            if now - connection.idle_since > self._idle_seconds:
                connection.close()
                continue
            return connection
        return None

    def _put(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        connection.idle_since = self._clock()
        idle.append(connection)
        if len(idle) > self._max_idle:
            idle.pop(0).close()

    async def _connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        host, port = origin
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(origin, self._forget), host, port
                )
        except TimeoutError:  # an OSError too: first
            raise NoAnswer(
                f"cannot connect to {host}:{port} in {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise NoAnswer(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
