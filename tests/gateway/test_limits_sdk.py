"""Limits of keys and users through the official ``openai`` SDK: the gateway in
front of the stand-in engine, limits set over REST.

The stand-in counts words: the prompt below is 5 tokens, a reply ``max_tokens``.
Rate windows run on the controller's ``limits_clock``, which a test skips forward.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from controller import appkeys
from controller.gateway import GATEWAY
from tests.dockerutil import free_port
from tests.gateway.conftest import MODEL, Stack, make_stack
from tests.metrics.scrape import scrape
from tests.waiting import eventually

MESSAGES: list[Any] = [{"role": "user", "content": "say something nice to me"}]
RATE_HEADERS = (
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
)  # fmt: skip


def client(stack: Stack, key: str, retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=retries)


async def new_key(stack: Stack, **limits: Any) -> tuple[str, str]:
    """A key with ``limits``: its id and secret."""
    status, body = await stack.ctl.admin(
        "POST", "/api/api-keys", json={"name": f"key-{time.monotonic_ns()}", "limits": limits}
    )
    assert status == 201, body
    return body["id"], body["key"]


async def chat(stack: Stack, key: str, max_tokens: int = 5) -> dict[str, str]:
    """One completion; the answer's headers."""
    async with client(stack, key) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=max_tokens
        )
    raw.parse()
    return dict(raw.headers)


async def refused(stack: Stack, key: str, retries: int = 0) -> openai.RateLimitError:
    async with client(stack, key, retries) as sdk:
        with pytest.raises(openai.RateLimitError) as info:
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert info.value.status_code == 429
    return info.value


def refusals(stack: Stack, key_id: str, reason: str) -> float:
    return stack.ctl.app[appkeys.METRICS].refused.values.get((key_id, reason), 0)


async def test_rpm_refusal_carries_openai_headers_and_is_counted(stack: Stack) -> None:
    key_id, key = await new_key(stack, rpm=2)
    first = await chat(stack, key)
    assert all(name in first for name in RATE_HEADERS[:3])
    assert (first["x-ratelimit-limit-requests"], first["x-ratelimit-remaining-requests"]) == (
        "2", "1"
    )  # fmt: skip
    assert (await chat(stack, key))["x-ratelimit-remaining-requests"] == "0"
    error = await refused(stack, key)
    assert error.code == "rpm"
    assert isinstance(error.body, dict) and error.body["type"] == "rate_limit_exceeded"
    headers = error.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert refusals(stack, key_id, "rpm") == 1
    metrics = await scrape(stack.ctl)
    assert metrics.value("lmstack_gateway_refused_total", key=key_id, reason="rpm") == 1


async def test_the_sdk_retries_after_retry_after_and_succeeds(stack: Stack) -> None:
    key_id, key = await new_key(stack, rpm=1)
    await chat(stack, key)
    stack.ctl.limits_clock.advance(59.7)  # the window frees its slot 0.3 s from now
    async with client(stack, key, retries=2) as sdk:
        began = time.monotonic()
        reply = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        waited = time.monotonic() - began
    assert reply.choices[0].message.content == "lorem ipsum"
    assert refusals(stack, key_id, "rpm") == 1  # refused once, then admitted
    assert 0.2 <= waited < 5  # it waited for retry-after-ms, not its own back-off


async def test_tpm_counts_the_tokens_engines_report(stack: Stack) -> None:
    key_id, key = await new_key(stack, tpm=15)
    first = await chat(stack, key)  # 5 + 5 tokens
    assert first["x-ratelimit-limit-tokens"] == "15"
    assert first["x-ratelimit-remaining-tokens"] == "15"  # counted when it completed
    second = await chat(stack, key, max_tokens=1)  # 10 < 15: admitted, 16 after
    assert second["x-ratelimit-remaining-tokens"] == "5"
    error = await refused(stack, key)
    assert error.code == "tpm"
    assert error.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-reset-tokens" in error.response.headers
    # A minute on, both requests' tokens have left the window.
    stack.ctl.limits_clock.advance(60)
    await chat(stack, key)
    assert refusals(stack, key_id, "tpm") == 1


async def test_budget_refusal_is_insufficient_quota_and_not_retried(stack: Stack) -> None:
    key_id, key = await new_key(stack, token_budget=15, budget_period="day")
    first = await chat(stack, key)
    assert first["x-ratelimit-limit-tokens"] == "15"
    await chat(stack, key)  # 10 of 15 used: admitted, and it overshoots to 20
    error = await refused(stack, key, retries=3)
    assert error.code == "token_budget"
    assert isinstance(error.body, dict) and error.body["type"] == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert int(error.response.headers["retry-after"]) <= 86_400
    assert refusals(stack, key_id, "token_budget") == 1  # the SDK did not retry


async def test_a_user_limit_stricter_than_the_key_limit_wins(stack: Stack) -> None:
    _, me = await stack.ctl.admin("GET", "/api/auth/me")
    status, body = await stack.ctl.admin(
        "PATCH", f"/api/users/{me['id']}", json={"limits": {"rpm": 1}}
    )
    assert status == 200, body
    key_id, key = await new_key(stack, rpm=10)
    headers = await chat(stack, key)
    assert headers["x-ratelimit-limit-requests"] == "1"
    error = await refused(stack, key)
    assert error.code == "rpm" and "user" in error.message
    assert refusals(stack, key_id, "rpm") == 1
    # The user's limit holds their login tokens too (no key: counted under "").
    async with client(stack, stack.ctl.admin_token) as sdk:
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert refusals(stack, "", "rpm") == 1
    # And every answer under a limit says so, the model list and a 404 included.
    async with client(stack, key) as sdk:
        listed = await sdk.models.with_raw_response.list()
        assert listed.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.response.headers["x-ratelimit-limit-requests"] == "1"


@pytest.fixture
async def slow_stack(tmp_path: Path, database_url: str) -> AsyncIterator[Stack]:
    """The stand-in taking 0.1 s per generated token."""
    async for value in make_stack(tmp_path, database_url=database_url, STANDIN_TOKEN_DELAY="0.1"):
        yield value


async def test_parallel_limit_holds_streams_and_frees_them_when_clients_leave(
    slow_stack: Stack,
) -> None:
    stack = slow_stack
    key_id, key = await new_key(stack, max_parallel=1)
    async with client(stack, key) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=30, stream=True
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "1"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        stream = raw.parse()
        first = await anext(aiter(stream))  # in flight now
        assert first.choices[0].delta.content is not None
        error = await refused(stack, key)
        assert error.code == "max_parallel"
        assert error.response.headers["retry-after"] == "1"
        await stream.close()  # the client leaves mid-stream
    # The slot comes back when the gateway sees the client gone.
    limiter_free = await eventually(lambda: _admits(stack, key), interval=0.1)
    assert limiter_free
    assert refusals(stack, key_id, "max_parallel") >= 1


async def _admits(stack: Stack, key: str) -> bool:
    try:
        await chat(stack, key, max_tokens=1)
    except openai.RateLimitError:
        return False
    return True


async def test_budgets_survive_a_controller_restart(tmp_path: Path, database_url: str) -> None:
    overrides = {"grpc_port": free_port()}  # the agent reconnects on its own
    async for stack in make_stack(tmp_path, database_url=database_url, overrides=overrides):
        _, key = await new_key(stack, token_budget=25, budget_period="month")
        await chat(stack, key)  # 10 tokens
        await restart(stack)
        headers = await chat(stack, key)  # seeded from the usage table: 10 used
        assert headers["x-ratelimit-remaining-tokens"] == "15"
        await chat(stack, key, max_tokens=1)  # 20 < 25: admitted, 26 after
        error = await refused(stack, key)
        assert error.code == "token_budget"


async def test_rate_windows_survive_a_controller_restart(tmp_path: Path, database_url: str) -> None:
    overrides = {"grpc_port": free_port()}
    async for stack in make_stack(tmp_path, database_url=database_url, overrides=overrides):
        _, key = await new_key(stack, rpm=2, tpm=1000)
        await chat(stack, key)
        await chat(stack, key)
        await restart(stack)  # the journal's last minute rebuilds the windows
        error = await refused(stack, key)
        assert error.code == "rpm"
        assert error.response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 20)


async def restart(stack: Stack) -> None:
    """The controller stopped and started again; back when its route is served."""
    await stack.ctl.restart()
    fleet = stack.ctl.app[appkeys.FLEET]
    await eventually(lambda: fleet.is_connected(stack.agent.worker_id))

    async def serving() -> bool:
        route = await stack.ctl.app[GATEWAY].routes.lookup(MODEL)
        return route is not None and route.status == "running" and bool(route.instances)

    await eventually(serving)


async def test_unlimited_keys_get_no_rate_headers(stack: Stack) -> None:
    headers = await chat(stack, stack.key)
    assert not any(name in headers for name in RATE_HEADERS)


async def test_engine_errors_release_their_slot_and_carry_the_headers(stack: Stack) -> None:
    _, key = await new_key(stack, max_parallel=1)
    await stack.engine.stop()
    async with client(stack, key) as sdk:
        for _ in range(3):  # a leaked slot would make the second a 429
            with pytest.raises(openai.InternalServerError) as info:
                await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
            assert info.value.status_code == 502
            assert info.value.response.headers["x-ratelimit-limit-requests"] == "1"
