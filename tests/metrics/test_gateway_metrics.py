"""Gateway metrics after real traffic through the stand-in engine: requests by
deployment and status, tokens, time to first token, latency, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway.conftest import MODEL, Stack, make_stack
from tests.metrics.scrape import scrape

MESSAGES: list[Any] = [{"role": "user", "content": "say something nice to me"}]


@pytest.fixture
async def stack(tmp_path: Path, database_url: str) -> AsyncIterator[Stack]:
    async for value in make_stack(tmp_path, database_url=database_url):
        yield value


def client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=stack.key, max_retries=0)


async def test_requests_tokens_and_latency_per_deployment(stack: Stack) -> None:
    async with client(stack) as sdk:
        reply = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=5, stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert reply.usage is not None and chunks

    got = await scrape(stack.ctl)
    ours = {"deployment": MODEL}
    assert got.value("lmstack_gateway_requests_total", **ours, status="200") == 2
    # The stand-in engine reports 5 prompt and 5 completion tokens per call.
    assert got.value("lmstack_gateway_prompt_tokens_total", **ours) == 10
    assert got.value("lmstack_gateway_completion_tokens_total", **ours) == 10
    assert got.value("lmstack_gateway_request_duration_seconds_count", **ours) == 2
    # Time to first token: streams only.
    assert got.value("lmstack_gateway_time_to_first_token_seconds_count", **ours) == 1
    ttft = got.value("lmstack_gateway_time_to_first_token_seconds_sum", **ours)
    assert 0 < ttft <= got.value("lmstack_gateway_request_duration_seconds_sum", **ours)
    assert got.value("lmstack_gateway_errors_total", **ours, code="upstream_error") == 0
    http = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert got.value("lmstack_http_requests_total", **http) == 2


async def test_engine_failures_are_counted(stack: Stack) -> None:
    await stack.engine.stop()
    async with client(stack) as sdk:
        with pytest.raises(openai.InternalServerError):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    got = await scrape(stack.ctl)
    ours = {"deployment": MODEL}
    assert got.value("lmstack_gateway_errors_total", **ours, code="upstream_error") == 1
    assert got.value("lmstack_gateway_requests_total", **ours, status="502") == 1
    assert got.value("lmstack_gateway_requests_total", **ours, status="200") == 0


async def test_unknown_models_do_not_become_labels(stack: Stack) -> None:
    async with client(stack) as sdk:
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
    got = await scrape(stack.ctl)
    assert "no-such-model" not in got.label_values("lmstack_gateway_requests_total", "deployment")
    http = {"route": "/v1/chat/completions", "method": "POST", "status": "404"}
    assert got.value("lmstack_http_requests_total", **http) == 1


async def test_requests_in_flight_per_deployment(tmp_path: Path) -> None:
    # Tokens 0.3 s apart: a stream of 3 stays in flight for about a second.
    async for stack in make_stack(tmp_path, STANDIN_TOKEN_DELAY="0.3"):
        ours = {"deployment": MODEL}
        async with client(stack) as sdk:
            stream = await sdk.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=3, stream=True
            )
            first = await anext(aiter(stream))
            assert first.choices
            during = await scrape(stack.ctl)
            rest = [chunk async for chunk in stream]
        assert rest
        after = await scrape(stack.ctl)
        assert during.value("lmstack_gateway_requests_in_flight", **ours) == 1
        assert after.value("lmstack_gateway_requests_in_flight", **ours) == 0
