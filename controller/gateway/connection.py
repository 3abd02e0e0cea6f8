"""One HTTP/1.1 connection to an engine: a request written, its answer parsed
as it arrives.

HTTP parsing is not ours: it is httptools (llhttp, the parser uvicorn uses),
so chunked bodies, keep-alive rules and malformed answers are handled by a
well-kept parser. The pool around connections is ``upstream.EngineClient``.

Guarantees:
* ``send`` starts a new answer: what the last request left (body pieces, an
  error, the status and headers) is gone.
* ``ready`` resolves at the answer's headers, or with ``whole`` at its end
  (one wake-up instead of two); interim answers (1xx, e.g. 103 Early Hints)
  are skipped, the final answer is the one read.
* Bodies are read with back-pressure: the socket stops being read while more
  than ``HIGH_WATER`` bytes wait for the reader (never for a ``whole``
  answer, which is of bounded size), and is read again once at most a
  quarter of that waits.
* A body without a length ends when the engine closes cleanly; any other
  close before the answer's end, or a malformed answer, fails ``ready`` and
  the reader with ``UpstreamError``. Malformed bytes after a complete answer
  keep the answer and close the connection (it is not kept alive).
* ``got_bytes`` says whether any byte of an answer arrived (the client's
  rule for retrying reads it); ``on_closed`` runs once, when the connection
  has closed.

Concurrency: event loop only; one request at a time per connection, one
reader at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from shared.errors import UpstreamError

__all__ = ["HIGH_WATER", "Connection", "Origin"]

HIGH_WATER = 256 * 1024
_LOW_WATER = HIGH_WATER // 4

Origin = tuple[str, int]


class Connection(asyncio.Protocol):
    """One TCP connection to an engine and the answer being read on it."""

    def __init__(self, origin: Origin, on_closed: Callable[[Connection], None]) -> None:
        self.origin = origin
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        # Resolved when the caller may go on: at the headers for a stream,
        # at the end of the message for a whole answer (one wake-up, not two).
        self._ready: asyncio.Future[None] | None = None
        self._whole = False
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: UpstreamError | None = None
        self._headers_done = False
        self._interim = False
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.closed = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}

    # -- the request -----------------------------------------------------

    def send(self, data: bytes, *, whole: bool) -> None:
        self._ready = self._loop.create_future()
        self._whole = whole
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self._headers_done = self._interim = False
        self.complete = self.keep_alive = self.got_bytes = False
        self.status = 0
        self.headers = {}
        try:
            assert self._transport is not None
            self._transport.write(data)
        except RuntimeError as exc:  # uvloop: the transport is closing
            raise UpstreamError(f"the connection is closing: {exc}") from exc

    async def ready(self) -> None:
        """Wait for the headers, or for the whole answer when sent ``whole``."""
        assert self._ready is not None
        await self._ready

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived; ``b""`` at its end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _LOW_WATER and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    @property
    def usable(self) -> bool:
        """Open and not on its way to closing (the engine's EOF may have been
        read, ``connection_lost`` not yet run)."""
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                self._fail(UpstreamError(f"malformed HTTP answer: {exc}"))
            # Else garbage after a complete answer: keep the answer, drop the connection.
            self.keep_alive = False
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self._ready is not None:
            if exc is None and self._headers_done and self._delimited_by_close():
                self.complete = True  # the body ran until the engine closed
                self._resolve()
            else:
                reason = f": {exc}" if exc else ""
                self._fail(UpstreamError(f"the engine closed the connection{reason}"))
        self.keep_alive = False
        self._wake()
        self._on_closed(self)

    # -- httptools callbacks ---------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # e.g. 103 Early Hints: the answer comes after it
            return
        self.status = status
        self._headers_done = True
        if not self._whole:
            self._resolve()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if (
            self._buffered > HIGH_WATER
            and not self._whole
            and not self._paused
            and self._transport is not None
        ):
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._resolve()
        self._wake()

    # -- internals -------------------------------------------------------

    def _delimited_by_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        self._wake()

    def _resolve(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
