"""A deployment served by several instances: the gateway spreads requests over
them, sends a draining one nothing new while its own requests finish, counts
requests in flight per instance back to 0 whatever the way out, and sends a
request that got no answer to the other instance, once, before the first byte
only.

Two stand-in engines (processes) serve one deployment: the instance the
deployment service wrote and a second instance row on the same worker
(``tests.gateway.instances``). A scripted engine (``tests.gateway.scripted``)
stands in for an instance that refuses, breaks or answers with its own error.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from controller.gateway import GATEWAY, Gateway
from tests.dockerutil import free_port
from tests.gateway.conftest import MODEL, Engine, Stack, make_stack, start_engine
from tests.gateway.instances import add_instance, instance_ids, set_draining
from tests.gateway.scripted import CHUNKED_HEAD, HOST, Engines, Peer, answer, chunk
from tests.gateway.scripted import Engine as Scripted
from tests.waiting import eventually

MESSAGES: Any = [{"role": "user", "content": "one two three"}]
CHAT: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}


@dataclass
class Pair:
    stack: Stack
    engines: dict[str, Engine]  # by instance id, oldest instance first

    @property
    def gateway(self) -> Gateway:
        return self.stack.ctl.app[GATEWAY]

    def served(self) -> list[int]:
        """Chat completions each engine answered, oldest instance first."""
        return [served(engine) for engine in self.engines.values()]


def served(engine: Engine) -> int:
    """Chat completions the engine answered, or was answering when its client left."""
    ends = ("POST /v1/chat/completions -> ", "client went away during /v1/chat/completions")
    return sum(any(end in line for end in ends) for line in engine.log)


async def second_instance(stack: Stack, port: int) -> str:
    instance = await add_instance(stack.db, stack.deployment_id, stack.agent.worker_id, port)
    stack.changed()
    return instance


async def make_pair(
    tmp_path: Path,
    database_url: str,
    token_delay: str = "",
    config: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    async for stack in make_stack(
        tmp_path, database_url=database_url, config=config, STANDIN_TOKEN_DELAY=token_delay
    ):
        engine = await start_engine(free_port(), MODEL, STANDIN_TOKEN_DELAY=token_delay)
        try:
            [first] = await instance_ids(stack.db, stack.deployment_id)
            second = await second_instance(stack, engine.port)
            yield Pair(stack, {first: stack.engine, second: engine})
        finally:
            await engine.stop()


@pytest.fixture
async def pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    async for value in make_pair(tmp_path, database_url):
        yield value


@pytest.fixture
async def slow_pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    """Engines generating a token every 0.05 s."""
    async for value in make_pair(tmp_path, database_url, token_delay="0.05"):
        yield value


@pytest.fixture
async def engines() -> AsyncIterator[Engines]:
    engines = Engines()
    yield engines
    for engine in engines.started:
        await engine.close()


def sdk(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=stack.key, max_retries=0)


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


async def post(stack: Stack, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.base_url + "/chat/completions", json=body, headers=auth(stack)) as resp,
    ):
        return resp.status, await resp.read()


def events(data: bytes) -> list[str]:
    return [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]


async def idle(gateway: Gateway) -> None:
    """Every count back to 0: per instance and per deployment."""
    await eventually(
        lambda: (gateway.in_flight.counts(), dict(gateway.proxy.in_flight)),
        lambda counts: counts == ({}, {}),
        message=lambda counts: f"still in flight: {counts}",
    )


# -- spreading and draining ---------------------------------------------------


async def test_requests_spread_over_the_instances(pair: Pair) -> None:
    async with sdk(pair.stack) as client:
        for _ in range(6):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        assert [m.id for m in (await client.models.list()).data] == [MODEL]
    # Round robin, the default policy: in turn.
    await eventually(pair.served, lambda counts: counts == [3, 3])
    await idle(pair.gateway)


async def test_a_draining_instance_gets_no_new_requests_while_its_stream_finishes(
    slow_pair: Pair,
) -> None:
    stack, gateway = slow_pair.stack, slow_pair.gateway
    async with aiohttp.ClientSession() as http:
        # 60 tokens at 0.05 s: the stream runs 3 s.
        stream = await http.post(
            stack.base_url + "/chat/completions",
            json={**CHAT, "stream": True, "max_tokens": 60}, headers=auth(stack),
        )  # fmt: skip
        assert stream.status == 200
        await stream.content.readline()
        [busy] = gateway.in_flight.counts()
        await set_draining(stack.db, busy)
        stack.changed()  # as the deployment service announces it
        drained = asyncio.create_task(gateway.in_flight.idle(busy, timeout=30))
        for _ in range(4):
            assert (await post(stack, {**CHAT, "max_tokens": 1}))[0] == 200
        assert gateway.in_flight.in_flight(busy) == 1  # the stream, still going
        assert not drained.done()
        rest = await stream.read()
        stream.release()
    assert events(rest)[-1] == "[DONE]"
    assert not any("error" in json.loads(e) for e in events(rest)[:-1])  # cut by nothing
    assert await asyncio.wait_for(drained, 5) is True
    other = next(engine for i, engine in slow_pair.engines.items() if i != busy)
    await eventually(
        lambda: (served(slow_pair.engines[busy]), served(other)), lambda n: n == (1, 4)
    )
    await idle(gateway)


@pytest.fixture
async def gated_pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    """Slow engines, one request at a time: the next waits in the deployment's queue."""
    config = {"max_parallel": 1, "max_queued": 1, "queue_timeout": 30}
    async for value in make_pair(tmp_path, database_url, token_delay="0.05", config=config):
        yield value


async def test_a_request_queued_before_an_instance_drained_is_not_sent_there(
    gated_pair: Pair,
) -> None:
    stack, gateway = gated_pair.stack, gated_pair.gateway
    first, second = gated_pair.engines
    async with aiohttp.ClientSession() as http:
        holding = await http.post(
            stack.base_url + "/chat/completions",
            json={**CHAT, "stream": True, "max_tokens": 2000}, headers=auth(stack),
        )  # fmt: skip
        await holding.content.readline()
        assert gateway.in_flight.counts() == {first: 1}  # round robin: the first
        # Its route read while both instances served; in turn it is the second's.
        waiting = asyncio.create_task(post(stack, {**CHAT, "max_tokens": 1}))
        await eventually(lambda: gateway.admission.queued(stack.deployment_id) == 1)
        await set_draining(stack.db, second)
        stack.changed()
        holding.close()
        assert (await asyncio.wait_for(waiting, 10))[0] == 200
    await eventually(gated_pair.served, lambda counts: counts == [2, 0])
    await idle(gateway)


async def test_in_flight_counts_return_to_0_after_streams_errors_and_clients_leaving(
    slow_pair: Pair,
) -> None:
    stack, gateway = slow_pair.stack, slow_pair.gateway
    async with sdk(stack) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=3, stream=True
        )
        assert len([chunk async for chunk in stream]) >= 3
    async with aiohttp.ClientSession() as http:
        # A client that leaves mid-stream.
        left = await http.post(
            stack.base_url + "/chat/completions",
            json={**CHAT, "stream": True, "max_tokens": 60}, headers=auth(stack),
        )  # fmt: skip
        await left.content.readline()
        left.close()
        # A client whose JSON request is cancelled while the engine generates.
        cancelled = asyncio.create_task(post(stack, {**CHAT, "max_tokens": 40}))
        await eventually(lambda: sum(gateway.in_flight.counts().values()) >= 1)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
    # The engine's own refusal, JSON and streamed.
    for streamed in (False, True):
        status, _ = await post(stack, {"model": MODEL, "messages": "x", "stream": streamed})
        assert status == 400
    await idle(gateway)


# -- retries ------------------------------------------------------------------


@pytest.fixture
def refusing_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))  # bound, never listening: connecting is refused
        yield sock.getsockname()[1]


async def test_a_refused_request_goes_to_the_other_instance_and_counts_once(
    stack: Stack, refusing_port: int
) -> None:
    await second_instance(stack, refusing_port)
    gateway = stack.ctl.app[GATEWAY]
    async with sdk(stack) as client:
        for turn in range(6):
            if turn % 2:
                chunks = await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=2, stream=True
                )
                assert [c async for c in chunks]
            else:
                reply = await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=2
                )
                assert reply.usage is not None and reply.usage.completion_tokens == 2
    await eventually(lambda: served(stack.engine), lambda n: n == 6)
    await idle(gateway)
    _, usage = await stack.ctl.admin("GET", "/api/usage")
    assert usage["totals"]["requests"] == 6
    assert usage["totals"]["completion_tokens"] == 12


async def with_scripted(
    stack: Stack, engines: Engines, handler: Callable[[Peer], Awaitable[None]]
) -> Scripted:
    """The scripted engine as the deployment's second instance."""
    scripted = await engines.start(handler)
    await second_instance(stack, scripted.port)
    return scripted


async def test_no_retry_once_the_engine_sent_a_byte(stack: Stack, engines: Engines) -> None:
    async def half_an_answer(peer: Peer) -> None:
        await peer.request()
        await peer.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')

    scripted = await with_scripted(stack, engines, half_an_answer)
    results = [await post(stack, {**CHAT, "max_tokens": 1}) for _ in range(4)]
    statuses = [status for status, _ in results]
    # In turn: the stand-in answers, the scripted engine breaks and is not retried.
    assert statuses == [200, 502, 200, 502]
    assert json.loads(results[1][1])["error"]["code"] == "upstream_error"
    assert scripted.accepted == 2
    await eventually(lambda: served(stack.engine), lambda n: n == 2)
    await idle(stack.ctl.app[GATEWAY])


async def test_no_retry_of_a_stream_after_its_first_event(stack: Stack, engines: Engines) -> None:
    async def one_event_then_gone(peer: Peer) -> None:
        await peer.request()
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "lorem"}}]}\n\n'
        await peer.send(CHUNKED_HEAD + chunk(event))

    scripted = await with_scripted(stack, engines, one_event_then_gone)
    body = {**CHAT, "max_tokens": 3, "stream": True}
    first, second = await post(stack, body), await post(stack, body)
    assert first[0] == 200 and events(first[1])[-1] == "[DONE]"
    assert second[0] == 200  # the stream had started: its error is an event
    cut = events(second[1])
    assert "lorem" in cut[0] and json.loads(cut[-2])["error"]["code"] == "upstream_error"
    assert cut[-1] == "[DONE]"
    assert scripted.accepted == 1
    await eventually(lambda: served(stack.engine), lambda n: n == 1)
    await idle(stack.ctl.app[GATEWAY])


async def test_an_engine_error_answer_passes_through_unretried(
    stack: Stack, engines: Engines
) -> None:
    error = b'{"error": {"message": "out of memory", "type": "InternalServerError"}}'

    async def failing(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer(error, status="500 Internal Server Error"))

    scripted = await with_scripted(stack, engines, failing)
    results = [await post(stack, {**CHAT, "max_tokens": 1}) for _ in range(2)]
    assert results[0][0] == 200
    assert results[1] == (500, error)  # exactly the engine's answer
    assert sum(len(peer.requests) for peer in scripted.peers) == 1
    await eventually(lambda: served(stack.engine), lambda n: n == 1)
    await idle(stack.ctl.app[GATEWAY])
