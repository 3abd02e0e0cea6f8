"""The gateway's keep-alive client to engines (``controller.gateway.upstream``)
over real sockets: a scripted engine on 127.0.0.1 sends exact bytes, and each
test checks what the client makes of them and what the engine saw."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from controller.gateway.upstream import EngineClient, EngineResponse, NoAnswer
from shared.errors import UpstreamError
from tests.gateway.scripted import (
    CHUNKED_HEAD,
    HOST,
    Engine,
    Engines,
    Peer,
    answer,
    chunk,
)  # fmt: skip
from tests.waiting import eventually

WAIT = 2.0  # the longest any single wait in this file may take before the test fails
T = TypeVar("T")


class Clients:
    def __init__(self) -> None:
        self.made: list[EngineClient] = []

    def new(
        self,
        *,
        idle_seconds: float = 4.0,
        max_idle_per_origin: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> EngineClient:
        client = EngineClient(
            connect_timeout=WAIT,
            idle_seconds=idle_seconds,
            max_idle_per_origin=max_idle_per_origin,
            clock=clock,
        )
        self.made.append(client)
        return client


@pytest.fixture
async def engines() -> AsyncIterator[Engines]:
    engines = Engines()
    yield engines
    for engine in engines.started:
        await engine.close()
    for engine in engines.started:
        if engine.errors:
            raise engine.errors[0]


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    clients = Clients()
    yield clients
    for client in clients.made:
        await client.close()


@pytest.fixture
def client(clients: Clients) -> EngineClient:
    return clients.new()


# -- helpers ------------------------------------------------------------------


async def echo(peer: Peer) -> None:
    """Answer every request on the connection, keep-alive, with
    ``b"<connection index>:<request body>"``."""
    while (request := await peer.request()) is not None:
        await peer.send(answer(b"%d:" % peer.index + request.body))


async def within(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(WAIT):
        return await awaitable


def arrived(client: EngineClient) -> bool:
    """Whether bytes of the answer being awaited have reached the client."""
    return any(connection.got_bytes for connection in client._open)


async def post(
    client: EngineClient, engine: Engine, body: bytes = b"{}", path: str = "/v1/completions"
) -> EngineResponse:
    return await within(client.post(HOST, engine.port, path, body, content_type="application/json"))


async def read_text(client: EngineClient, engine: Engine, body: bytes) -> bytes:
    """Post ``body`` and read the whole answer."""
    response = await post(client, engine, body)
    return await within(response.read())


# -- answers ------------------------------------------------------------------


async def test_content_length_answer_and_the_request_the_engine_saw(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"X-Request-ID: abc-1\r\nContent-Length: 11\r\n\r\n"
            b'{"ok":true}'
        )
        await peer.wait_eof()

    engine = await engines.start(handler)
    body = '{"model": "m", "prompt": "héllo"}'.encode()
    response = await post(client, engine, body, path="/v1/chat/completions")
    assert response.status == 201
    assert response.headers == {
        "content-type": "application/json; charset=utf-8",
        "x-request-id": "abc-1",
        "content-length": "11",
    }
    assert response.content_type == "application/json; charset=utf-8"
    assert not response.finished
    assert await within(response.read()) == b'{"ok":true}'
    assert response.finished

    [request] = engine.peers[0].requests
    assert (request.method, request.path, request.version) == (
        "POST",
        "/v1/chat/completions",
        "HTTP/1.1",
    )
    assert request.headers == {
        "host": f"127.0.0.1:{engine.port}",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "user-agent": "lmstack-gateway",
    }
    assert request.body == body


async def test_error_status_is_an_answer_and_content_type_defaults(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"overloaded", status="503 Service Unavailable", headers="X-A: 1"))
        await peer.request()
        await peer.send(answer(b"", status="204 No Content", headers="X-B: 2"))
        await peer.wait_eof()

    engine = await engines.start(handler)
    first = await post(client, engine)
    assert first.status == 503
    assert first.content_type == "application/octet-stream"
    assert await within(first.read()) == b"overloaded"
    assert client.idle_connections(HOST, engine.port) == 1  # an error answer keeps the connection

    second = await post(client, engine)
    assert second.status == 204
    assert await within(second.read()) == b""
    # Each answer on a reused connection has its own headers.
    assert second.headers == {"x-b": "2", "content-length": "0"}
    assert first.headers == {"x-a": "1", "content-length": "10"}
    assert engine.accepted == 1


async def test_chunked_answer_arrives_chunk_by_chunk(
    engines: Engines, client: EngineClient
) -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    go: asyncio.Queue[None] = asyncio.Queue()
    sent: list[bytes] = []

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD)
        for piece in pieces:
            await go.get()  # the next chunk only once the test read the previous one
            await peer.send(chunk(piece))
            sent.append(piece)
        await go.get()
        await peer.send(b"0\r\n\r\n")
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content_type == "text/event-stream"
    for i, piece in enumerate(pieces):
        go.put_nowait(None)
        assert await within(response.read_chunk()) == piece
        assert sent == pieces[: i + 1]  # the engine has not sent the next chunk yet
        assert not response.finished
    go.put_nowait(None)
    assert await within(response.read_chunk()) == b""
    assert await within(response.read_chunk()) == b""
    assert response.finished
    response.release()
    assert client.idle_connections(HOST, engine.port) == 1


async def test_answer_trickled_one_byte_at_a_time(engines: Engines, client: EngineClient) -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Long-Header-Name: "
        + b"v" * 40
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(b"hello ")
        + chunk(b"world")
        + b"0\r\n\r\n"
    )

    async def handler(peer: Peer) -> None:
        await peer.request()
        for i in range(len(wire)):
            await peer.send(wire[i : i + 1])
            await asyncio.sleep(0)
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert response.headers["x-long-header-name"] == "v" * 40
    assert response.content_type == "text/event-stream"
    assert await within(response.read()) == b"hello world"
    assert client.idle_connections(HOST, engine.port) == 1


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    ],
    ids=["http11-connection-close", "http10", "http11-no-length"],
)
async def test_body_delimited_by_close_is_read_whole_and_not_pooled(
    engines: Engines, client: EngineClient, head: bytes
) -> None:
    pieces = [b"first part, ", b"second part, ", b"last part"]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(head)
        for piece in pieces:
            await peer.send(piece)
            await asyncio.sleep(0.01)
        # Returning closes the connection: that ends the body.

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert response.content_type == "text/plain"
    assert await within(response.read()) == b"".join(pieces)
    assert response.finished
    assert client.idle_connections(HOST, engine.port) == 0
    assert client.open_connections == 0


# -- the pool -----------------------------------------------------------------


async def test_sequential_posts_reuse_one_connection(
    engines: Engines, client: EngineClient
) -> None:
    engine = await engines.start(echo)
    response = await post(client, engine, b"one")
    assert client.open_connections == 1
    assert client.idle_connections(HOST, engine.port) == 0  # in use, not idle
    assert await within(response.read()) == b"0:one"
    assert client.idle_connections(HOST, engine.port) == 1

    assert await read_text(client, engine, b"two") == b"0:two"
    assert engine.accepted == 1
    assert [r.body for r in engine.peers[0].requests] == [b"one", b"two"]
    assert client.idle_connections(HOST, engine.port) == 1
    assert client.idle_connections(HOST, engine.port + 1) == 0
    assert client.open_connections == 1


async def test_most_recently_used_idle_connection_is_taken_first(
    engines: Engines, client: EngineClient
) -> None:
    engine = await engines.start(echo)
    a, b = await within(asyncio.gather(post(client, engine, b"a"), post(client, engine, b"b")))
    body_a = await within(a.read())
    body_b = await within(b.read())  # released last
    assert engine.accepted == 2
    assert client.idle_connections(HOST, engine.port) == 2
    assert await read_text(client, engine, b"c") == body_b.split(b":")[0] + b":c"
    assert body_a.split(b":")[0] != body_b.split(b":")[0]


async def test_connection_close_answer_is_not_reused(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(answer(request.body, headers="Connection: close"))
        # The engine leaves the connection open: the client must close it.
        assert await peer.wait_eof() == b""

    engine = await engines.start(handler)
    assert await read_text(client, engine, b"one") == b"one"
    assert client.idle_connections(HOST, engine.port) == 0
    await within(engine.peers[0].eof.wait())
    assert await read_text(client, engine, b"two") == b"two"
    assert engine.accepted == 2
    assert [len(peer.requests) for peer in engine.peers] == [1, 1]


async def test_stale_connection_closed_when_the_request_arrives_is_retried(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        if peer.index > 0:
            await echo(peer)
            return
        request = await peer.request()
        assert request is not None
        await peer.send(answer(b"0:" + request.body))  # keep-alive
        await peer.request()  # the next one arrives on the idle connection...
        # ...and the engine closes it without answering (uvicorn's idle timeout).

    engine = await engines.start(handler)
    assert await read_text(client, engine, b"one") == b"0:one"
    assert client.idle_connections(HOST, engine.port) == 1
    assert await read_text(client, engine, b"two") == b"1:two"
    assert engine.accepted == 2
    assert [r.body for r in engine.peers[0].requests] == [b"one", b"two"]
    assert [r.body for r in engine.peers[1].requests] == [b"two"]  # sent once where answered
    assert client.open_connections == 1
    assert client.idle_connections(HOST, engine.port) == 1


async def close_after_first_answer(peer: Peer) -> None:
    if peer.index > 0:
        await echo(peer)
        return
    request = await peer.request()
    assert request is not None
    await peer.send(answer(b"0:" + request.body))  # says keep-alive, then closes


async def test_idle_connection_the_engine_closed_leaves_the_pool(
    engines: Engines, client: EngineClient
) -> None:
    engine = await engines.start(close_after_first_answer)
    assert await read_text(client, engine, b"one") == b"0:one"
    await eventually(lambda: client.open_connections == 0)
    assert client.idle_connections(HOST, engine.port) == 0
    assert await read_text(client, engine, b"two") == b"1:two"
    assert [len(peer.requests) for peer in engine.peers] == [1, 1]


async def test_post_right_after_the_engine_closed_the_idle_connection(
    engines: Engines, client: EngineClient
) -> None:
    # Whether the client notices the close before or after it writes, the
    # request succeeds on a new connection.
    engine = await engines.start(close_after_first_answer)
    assert await read_text(client, engine, b"one") == b"0:one"
    assert await read_text(client, engine, b"two") == b"1:two"
    assert engine.accepted == 2
    assert [r.body for r in engine.peers[1].requests] == [b"two"]


async def test_idle_connection_older_than_idle_seconds_is_not_reused(
    engines: Engines, clients: Clients
) -> None:
    now = [100.0]
    client = clients.new(idle_seconds=4.0, clock=lambda: now[0])
    engine = await engines.start(echo)
    assert await read_text(client, engine, b"a") == b"0:a"
    now[0] = 104.0  # idle exactly idle_seconds: still reused
    assert await read_text(client, engine, b"b") == b"0:b"
    now[0] = 108.5  # idle 4.5 s since the last answer
    assert await read_text(client, engine, b"c") == b"1:c"
    assert engine.accepted == 2
    await within(engine.peers[0].eof.wait())  # the expired one was closed
    await eventually(lambda: client.open_connections == 1)
    assert client.idle_connections(HOST, engine.port) == 1


async def test_at_most_max_idle_per_origin_connections_stay_idle(
    engines: Engines, clients: Clients
) -> None:
    client = clients.new(max_idle_per_origin=1)
    engine = await engines.start(echo)
    a, b = await within(asyncio.gather(post(client, engine, b"a"), post(client, engine, b"b")))
    assert client.open_connections == 2
    body_a = await within(a.read())
    body_b = await within(b.read())
    assert client.idle_connections(HOST, engine.port) == 1
    # The older idle one was closed: its engine side sees the end of the stream.
    closed = engine.peers[int(body_a.split(b":")[0])]
    await within(closed.eof.wait())
    await eventually(lambda: client.open_connections == 1)
    assert await read_text(client, engine, b"c") == body_b.split(b":")[0] + b":c"
    assert engine.accepted == 2


async def test_close_closes_pooled_connections(engines: Engines, client: EngineClient) -> None:
    engine = await engines.start(echo)
    a, b = await within(asyncio.gather(post(client, engine, b"a"), post(client, engine, b"b")))
    await within(a.read())
    await within(b.read())
    assert client.idle_connections(HOST, engine.port) == 2
    await client.close()
    assert client.idle_connections(HOST, engine.port) == 0
    assert client.open_connections == 0
    for peer in engine.peers:
        await within(peer.eof.wait())


# -- broken engines -----------------------------------------------------------


async def test_fresh_connection_closed_without_answer_raises(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()  # read it, close without a word

    engine = await engines.start(handler)
    with pytest.raises(NoAnswer, match="closed the connection"):  # may go elsewhere
        await post(client, engine)
    assert engine.accepted == 1  # not retried
    assert client.open_connections == 0


async def test_reused_connection_broken_mid_answer_is_not_retried(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")  # then close

    engine = await engines.start(handler)
    assert await read_text(client, engine, b"one") == b"first"
    with pytest.raises(UpstreamError) as info:
        await post(client, engine)
    assert not isinstance(info.value, NoAnswer)  # part of an answer came: final
    assert engine.accepted == 1  # the engine saw part of an answer: no second try
    assert client.open_connections == 0


async def test_connection_refused_raises() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))  # bound, never listening: connecting is refused
        port = sock.getsockname()[1]
        client = EngineClient(connect_timeout=WAIT)
        try:
            with pytest.raises(NoAnswer, match=f"cannot connect to 127.0.0.1:{port}"):
                await within(client.post(HOST, port, "/", b"{}", content_type="application/json"))
            assert client.open_connections == 0
        finally:
            await client.close()


async def test_connect_timeout_is_no_answer() -> None:
    # TEST-NET-1 (RFC 5737) routes nowhere: connecting times out (or, on a
    # host without a route, fails at once); either way nothing answered.
    client = EngineClient(connect_timeout=0.2)
    try:
        with pytest.raises(NoAnswer, match=r"cannot connect to 192\.0\.2\.1:9"):
            await within(client.post("192.0.2.1", 9, "/", b"{}", content_type="application/json"))
        assert client.open_connections == 0
    finally:
        await client.close()


@pytest.mark.parametrize(
    "wire",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ids=["garbage", "bad-length", "bad-status", "two-lengths"],
)
async def test_malformed_answer_raises_and_closes(
    engines: Engines, client: EngineClient, wire: bytes
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(wire)
        await peer.wait_eof()  # the engine keeps it open: the client closes it

    engine = await engines.start(handler)
    with pytest.raises(UpstreamError, match="malformed HTTP answer"):
        await post(client, engine)
    await within(engine.peers[0].eof.wait())
    await eventually(lambda: client.open_connections == 0)
    assert client.idle_connections(HOST, engine.port) == 0


async def test_malformed_chunk_raises_on_read_and_closes(
    engines: Engines, client: EngineClient
) -> None:
    first_read = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"fine"))
        await first_read.wait()
        await peer.send(b"zz\r\nbroken\r\n")
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert await within(response.read_chunk()) == b"fine"
    first_read.set()
    with pytest.raises(UpstreamError, match="malformed HTTP answer"):
        await within(response.read_chunk())
    # Closed on the spot, before the caller releases the response.
    await within(engine.peers[0].eof.wait())
    await eventually(lambda: client.open_connections == 0)
    with pytest.raises(UpstreamError, match="malformed HTTP answer"):
        await within(response.read())
    assert client.idle_connections(HOST, engine.port) == 0


async def test_engine_closing_mid_body_raises_on_read(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    engine = await engines.start(handler)
    response = await post(client, engine)
    with pytest.raises(UpstreamError, match="closed the connection"):
        await within(response.read())
    assert not response.finished
    assert client.open_connections == 0
    assert client.idle_connections(HOST, engine.port) == 0


async def test_stream_cut_before_its_last_chunk_raises(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"data: one\n\n"))

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert await within(response.read_chunk()) == b"data: one\n\n"
    with pytest.raises(UpstreamError, match="closed the connection"):
        await within(response.read_chunk())
    assert not response.finished


# -- abandoned and cancelled calls --------------------------------------------


@pytest.mark.parametrize("how", ["release", "close"])
@pytest.mark.parametrize("read_first", [0, 1], ids=["unread", "partly-read"])
async def test_response_dropped_before_its_end_closes_the_connection(
    engines: Engines, client: EngineClient, how: str, read_first: int
) -> None:
    the_rest = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        # The whole answer, keep-alive: only the caller's reading is missing.
        await peer.send(CHUNKED_HEAD + chunk(b"one"))
        await the_rest.wait()
        await peer.send(chunk(b"two") + b"0\r\n\r\n")
        assert await peer.wait_eof() == b""

    engine = await engines.start(handler)
    response = await post(client, engine)
    for _ in range(read_first):
        assert await within(response.read_chunk()) == b"one"
    the_rest.set()
    await eventually(lambda: response._connection.complete)  # all of it is at the client
    if how == "release":
        response.release()
    else:
        response.close()
    await within(engine.peers[0].eof.wait())
    assert client.idle_connections(HOST, engine.port) == 0
    await eventually(lambda: client.open_connections == 0)


async def wait_never(peer: Peer) -> None:
    await peer.request()
    await peer.wait_eof()  # never answers


async def test_cancelled_post_closes_its_connection(engines: Engines, client: EngineClient) -> None:
    engine = await engines.start(wait_never)
    task = asyncio.create_task(
        client.post(HOST, engine.port, "/", b"{}", content_type="application/json")
    )
    await eventually(lambda: engine.accepted == 1 and len(engine.peers[0].requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await within(engine.peers[0].eof.wait())
    await eventually(lambda: client.open_connections == 0)
    assert client.idle_connections(HOST, engine.port) == 0


async def test_post_timed_out_by_the_caller_closes_its_connection(
    engines: Engines, client: EngineClient
) -> None:
    engine = await engines.start(wait_never)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.post(HOST, engine.port, "/", b"{}", content_type="application/json")
    assert len(engine.peers[0].requests) == 1
    await within(engine.peers[0].eof.wait())
    await eventually(lambda: client.open_connections == 0)
    assert client.idle_connections(HOST, engine.port) == 0


async def test_cancelled_read_closes_its_connection(engines: Engines, client: EngineClient) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"one"))  # and nothing more
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await response.read()
    await within(engine.peers[0].eof.wait())
    await eventually(lambda: client.open_connections == 0)
    assert client.idle_connections(HOST, engine.port) == 0


# -- back-pressure ------------------------------------------------------------


async def test_unread_body_stalls_the_engine_and_arrives_intact(
    engines: Engines, client: EngineClient
) -> None:
    total = 32 * 1024 * 1024
    body = random.Random(7).randbytes(total)
    written = [0]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        piece = 64 * 1024
        for offset in range(0, total, piece):
            await peer.send(body[offset : offset + piece])
            written[0] = offset + piece
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    # The caller reads nothing: the engine's writes must stall well short of the end.
    # Stalled for good once the client has stopped reading and the engine's
    # socket takes no more (its writer holds a backlog): nothing moves then
    # until the caller reads.
    writer = engine.peers[0].writer.transport
    await eventually(
        lambda: response._connection._paused and writer.get_write_buffer_size() > 0,
        message=lambda _: f"never stalled; the engine wrote {written[0]} of {total} bytes",
    )
    assert 0 < written[0] < total // 2, f"the engine wrote {written[0]} of {total} bytes"

    received = hashlib.sha256()
    size = 0
    async with asyncio.timeout(WAIT * 2):
        while data := await response.read_chunk():
            received.update(data)
            size += len(data)
    response.release()
    assert size == total
    assert received.hexdigest() == hashlib.sha256(body).hexdigest()
    assert written[0] == total
    assert client.idle_connections(HOST, engine.port) == 1


# -- the host header ----------------------------------------------------------


async def test_ipv6_host_header_is_bracketed(engines: Engines, client: EngineClient) -> None:
    try:
        engine = await engines.start(echo, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    response = await within(
        client.post("::1", engine.port, "/v1/models", b"x", content_type="text/plain")
    )
    assert await within(response.read()) == b"0:x"
    assert engine.peers[0].requests[0].headers["host"] == f"[::1]:{engine.port}"
    assert client.idle_connections("::1", engine.port) == 1


# -- fixed after these tests found them ----------------------------------------


async def test_release_after_read_pools_the_connection_once(
    engines: Engines, client: EngineClient
) -> None:
    engine = await engines.start(echo)
    response = await post(client, engine, b"a")
    assert await within(response.read()) == b"0:a"
    response.release()
    assert client.open_connections == 1
    assert client.idle_connections(HOST, engine.port) == 1


async def test_interim_1xx_answer_is_skipped(engines: Engines, client: EngineClient) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        await eventually(lambda: arrived(client))  # the answer comes in a later read
        await peer.send(answer(b"ok"))
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert response.status == 200
    assert await within(response.read()) == b"ok"
    assert response.headers.get("link") is None  # the interim answer's headers are gone


async def test_garbage_after_a_complete_answer_keeps_the_answer(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"ok") + b"EXTRA")
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post(client, engine)
    assert await within(response.read()) == b"ok"
    await within(engine.peers[0].eof.wait())  # not reusable: dropped
    assert client.idle_connections(HOST, engine.port) == 0


# -- whole answers (``whole=True``: the JSON path) ------------------------------


async def post_whole(client: EngineClient, engine: Engine, body: bytes = b"{}") -> EngineResponse:
    return await within(
        client.post(HOST, engine.port, "/v1/x", body, content_type="application/json", whole=True)
    )


async def test_whole_answer_is_complete_when_post_returns(
    engines: Engines, client: EngineClient
) -> None:
    sent: list[str] = []

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(CHUNKED_HEAD + chunk(b"a"))
        # The headers and a first chunk are at the client: post() must go on waiting.
        await eventually(lambda: arrived(client))
        sent.append("the rest")
        await peer.send(chunk(b"b") + b"0\r\n\r\n")
        await echo(peer)

    engine = await engines.start(handler)
    response = await post_whole(client, engine)
    assert sent == ["the rest"]  # post() returned after the end, not at the headers
    assert response.status == 200
    assert response.finished is False  # nothing read yet, but all of it is here
    assert await within(response.read()) == b"ab"
    assert await read_text(client, engine, b"again") == b"0:again"  # kept alive, reused
    assert engine.accepted == 1


async def test_whole_answer_larger_than_the_high_water_mark(
    engines: Engines, client: EngineClient
) -> None:
    body = random.randbytes(3 * 1024 * 1024)

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(body))
        await peer.wait_eof()

    engine = await engines.start(handler)
    response = await post_whole(client, engine)  # no back-pressure: it would never complete
    assert await within(response.read()) == body


async def test_whole_answer_cut_short_raises_from_post(
    engines: Engines, client: EngineClient
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    engine = await engines.start(handler)
    with pytest.raises(UpstreamError) as info:
        await post_whole(client, engine)
    assert not isinstance(info.value, NoAnswer)
    assert client.open_connections == 0


async def test_whole_answer_delimited_by_close(engines: Engines, client: EngineClient) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")

    engine = await engines.start(handler)
    response = await post_whole(client, engine)
    assert await within(response.read()) == b"until the end"
    assert client.idle_connections(HOST, engine.port) == 0
