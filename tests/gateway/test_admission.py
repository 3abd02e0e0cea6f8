"""A deployment's ``max_parallel`` gate, through the real controller and the
stand-in engine: requests beyond it wait and then succeed when a slot frees; a
full queue or a wait past ``queue_timeout`` is refused with 429 in OpenAI's
shape and ``Retry-After`` (the official SDK raises ``RateLimitError``); a
queued client that disconnects frees its place; no slot leaks; bad values are
refused with 422.

A request is held open as a stream of a slow engine (``STANDIN_TOKEN_DELAY``)
that its client stops reading and then closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from controller.gateway import GATEWAY
from controller.gateway.admission import DeploymentGates
from tests.conftest import Controller
from tests.gateway.conftest import MODEL, Stack, make_stack
from tests.metrics.scrape import scrape
from tests.waiting import eventually

TOKEN_DELAY = "0.05"  # seconds per token: a 2,000-token stream takes 100 s


def gate(stack: Stack) -> DeploymentGates:
    return stack.ctl.app[GATEWAY].admission


def chat(max_tokens: int = 1, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


@contextlib.asynccontextmanager
async def holding(stack: Stack) -> AsyncIterator[aiohttp.ClientResponse]:
    """A stream that holds one slot until the block ends (its client closes it)."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http:
        resp = await http.post(stack.base_url + "/chat/completions", json=chat(2000, stream=True))
        assert resp.status == 200
        await resp.content.readline()  # the stream has started: the slot is taken
        try:
            yield resp
        finally:
            resp.close()


async def post(stack: Stack, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.key}"}) as http,
        http.post(stack.base_url + "/chat/completions", json=body) as resp,
    ):
        return resp.status, await resp.json(), dict(resp.headers)


async def queued(stack: Stack, count: int) -> None:
    await eventually(
        lambda: asyncio.sleep(0, gate(stack).queued(stack.deployment_id)),
        lambda n: n == count,
        message=lambda n: f"{n} queued, expected {count}",
    )


async def idle(stack: Stack) -> None:
    """Wait until no slot is held and nobody waits."""
    admission, deployment = gate(stack), stack.deployment_id
    await eventually(
        lambda: asyncio.sleep(0, (admission.in_flight(deployment), admission.queued(deployment))),
        lambda seen: seen == (0, 0),
        message=lambda seen: f"(in flight, queued) still {seen}",
    )


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[Stack]:
    config: dict[str, Any] = {"max_parallel": 1, "max_queued": 1, "queue_timeout": 30}
    async for value in make_stack(tmp_path, config=config, STANDIN_TOKEN_DELAY=TOKEN_DELAY):
        yield value


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[Stack]:
    config: dict[str, Any] = {"max_parallel": 1, "max_queued": 1, "queue_timeout": 0.5}
    async for value in make_stack(tmp_path, config=config, STANDIN_TOKEN_DELAY=TOKEN_DELAY):
        yield value


async def test_a_request_beyond_max_parallel_waits_then_succeeds(gated: Stack) -> None:
    async with holding(gated):
        waiting = asyncio.create_task(post(gated, chat()))
        await queued(gated, 1)
        # The queue (1) is full: the SDK sees a rate limit, with its headers.
        client = openai.AsyncOpenAI(base_url=gated.base_url, api_key=gated.key, max_retries=0)
        async with client:
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1
                )
        assert refused.value.status_code == 429
        assert refused.value.code == "deployment_max_parallel"
        assert refused.value.type == "rate_limit_exceeded"
        assert refused.value.response.headers["Retry-After"] == "1"
        assert "queue is full" in refused.value.message
        assert not waiting.done()
    status, body, _ = await waiting  # the held stream's client left: its slot went on
    assert status == 200 and body["usage"]["completion_tokens"] == 1
    await idle(gated)
    # Nothing leaked: a new request is admitted at once, with nobody queued.
    assert (await post(gated, chat()))[0] == 200
    await idle(gated)


async def test_a_wait_past_queue_timeout_is_refused(impatient: Stack) -> None:
    async with holding(impatient):
        status, body, headers = await post(impatient, chat())
    assert status == 429 and headers["Retry-After"] == "1"
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert body["error"]["code"] == "deployment_max_parallel"
    assert "no slot freed within 0.5 s" in body["error"]["message"]
    await idle(impatient)
    assert (await post(impatient, chat()))[0] == 200
    # The refusal is counted, by key and reason.
    metrics = await scrape(impatient.ctl)
    refusals = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.samples.items()
        if name == "lmstack_gateway_refused_total"
    }
    assert refusals == {"deployment_max_parallel": 1}


async def test_a_queued_client_that_leaves_frees_its_place(gated: Stack) -> None:
    async with holding(gated):
        leaving = asyncio.create_task(post(gated, chat()))
        await queued(gated, 1)
        leaving.cancel()  # closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await leaving
        await queued(gated, 0)
        # Its place is free: the next request is queued, not refused.
        staying = asyncio.create_task(post(gated, chat()))
        await queued(gated, 1)
    status, _, _ = await staying
    assert status == 200
    await idle(gated)


async def test_errors_and_abandoned_streams_give_their_slots_back(gated: Stack) -> None:
    for _ in range(3):
        async with holding(gated):
            pass  # the client leaves mid-stream
        await idle(gated)
    # The engine's own refusal (no messages) passes through and releases too.
    status, _, _ = await post(gated, {"model": MODEL, "max_tokens": 1, "messages": "x"})
    assert status != 429
    await idle(gated)
    assert (await post(gated, chat()))[0] == 200


async def test_a_deployment_without_max_parallel_has_no_gate(stack: Stack) -> None:
    route = await stack.ctl.app[GATEWAY].routes.lookup(MODEL)
    assert route is not None and route.admission is None
    results = await asyncio.gather(*(post(stack, chat()) for _ in range(8)))
    assert [status for status, _, _ in results] == [200] * 8
    assert gate(stack).in_flight(stack.deployment_id) == 0


@pytest.mark.parametrize(
    "config",
    [
        {"max_parallel": 0},
        {"max_parallel": "2"},
        {"max_parallel": 2, "max_queued": -1},
        {"max_parallel": 2, "queue_timeout": 0},
        {"max_parallel": 2, "queue_timeout": 7200},
        {"queue_timeout": 5},
        {"max_queued": 3},
    ],
)
async def test_bad_admission_config_is_refused(
    controller: Controller, config: dict[str, Any]
) -> None:
    status, body = await controller.admin(
        "POST", "/api/deployments", json={"name": "gated", "model": "m", "config": config}
    )
    assert status == 422, body
