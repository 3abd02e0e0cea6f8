"""Streaming and failure edges of the gateway, driven with a plain HTTP client
so the test sees the exact bytes on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from controller.gateway import GATEWAY
from tests.gateway.conftest import MODEL, Stack, make_stack
from tests.waiting import eventually

MESSAGES: Any = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}


def headers(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


@pytest.fixture
async def slow_stack(tmp_path: Path, database_url: str) -> AsyncIterator[Stack]:
    """Tokens 0.3 s apart; keep-alive comments every 0.1 s; 1 s upstream timeout."""
    overrides = {"gateway_keepalive_seconds": 0.1, "gateway_timeout": 1.0}
    async for value in make_stack(
        tmp_path, overrides=overrides, database_url=database_url, STANDIN_TOKEN_DELAY="0.3"
    ):
        yield value


async def test_malformed_bodies_are_400(tmp_path: Path, database_url: str) -> None:
    async for stack in make_stack(tmp_path, database_url=database_url):
        async with aiohttp.ClientSession() as http:
            for raw in (b"{nope", b"[1]", b'"x"', b"", b'{"messages": []}'):
                async with http.post(
                    stack.base_url + "/chat/completions", data=raw, headers=headers(stack)
                ) as resp:
                    assert resp.status == 400, raw
                    body = await resp.json()
                    assert set(body["error"]) >= {"message", "type", "code"}
                    assert body["error"]["type"] == "invalid_request_error"
            async with http.get(stack.base_url + "/nothing-here", headers=headers(stack)) as resp:
                assert resp.status == 404
                assert "error" in await resp.json()


async def test_stream_passes_chunks_as_they_come_with_keepalives(slow_stack: Stack) -> None:
    stack = slow_stack
    arrivals: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as http:
        start = asyncio.get_running_loop().time()
        async with http.post(
            stack.base_url + "/chat/completions",
            json={**CHAT, "stream": True, "max_tokens": 3},
            headers=headers(stack),
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for line in resp.content:
                arrivals.append((asyncio.get_running_loop().time() - start, line))
    lines = [line.strip() for _, line in arrivals if line.strip()]
    assert b": keep-alive" in lines
    data = [line for line in lines if line.startswith(b"data:")]
    assert data[-1] == b"data: [DONE]"
    words = [json.loads(line[5:])["choices"][0]["delta"].get("content") for line in data[:-1]]
    assert "".join(w or "" for w in words) == "lorem ipsum dolor"
    # Not buffered: the first word arrived well before the last one.
    first = next(t for t, line in arrivals if b"lorem" in line)
    last = next(t for t, line in arrivals if b"dolor" in line)
    assert last - first > 0.4


async def test_client_going_away_closes_the_upstream(slow_stack: Stack) -> None:
    stack = slow_stack
    gateway = stack.ctl.app[GATEWAY]
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            stack.base_url + "/chat/completions",
            json={**CHAT, "stream": True, "max_tokens": 50},
            headers=headers(stack),
        )
        assert resp.status == 200
        await resp.content.readline()
        assert gateway.proxy.in_flight[stack.deployment_id] == 1
        resp.close()  # the client hangs up mid-stream
    await eventually(lambda: stack.deployment_id not in gateway.proxy.in_flight, timeout=5)
    await eventually(
        lambda: any("client went away" in line for line in stack.engine.log), timeout=20
    )


async def test_upstream_timeout_is_504(slow_stack: Stack) -> None:
    stack = slow_stack
    async with openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.key, max_retries=0
    ) as client:
        # 10 tokens at 0.3 s each: a JSON answer takes 3 s, past the 1 s limit.
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"


async def test_error_after_the_stream_started_is_an_sse_event(
    tmp_path: Path, database_url: str
) -> None:
    # The engine process dies in the middle of a slow stream, after its fourth token.
    async for stack in make_stack(
        tmp_path, database_url=database_url, STANDIN_TOKEN_DELAY="0.3",
        STANDIN_CRASH_AFTER_TOKENS="4",
    ):  # fmt: skip
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                stack.base_url + "/chat/completions",
                json={**CHAT, "stream": True, "max_tokens": 40},
                headers=headers(stack),
            ) as resp,
        ):
            assert resp.status == 200
            lines = [line.strip() async for line in resp.content if line.strip()]
        data = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        assert data[-1] == b"[DONE]"
        error: dict[str, Any] = json.loads(data[-2])["error"]
        assert error["code"] == "upstream_error" and error["message"]
        assert any(b"lorem" in line for line in data)  # it had started


async def test_sdk_raises_on_a_mid_stream_error(tmp_path: Path, database_url: str) -> None:
    async for stack in make_stack(
        tmp_path, database_url=database_url, STANDIN_TOKEN_DELAY="0.2",
        STANDIN_CRASH_AFTER_TOKENS="4",
    ):  # fmt: skip
        async with openai.AsyncOpenAI(
            base_url=stack.base_url, api_key=stack.key, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=40, stream=True
            )
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
