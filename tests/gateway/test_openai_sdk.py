"""The official ``openai`` package, sync and async, against the gateway in
front of the stand-in engine."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from sqlalchemy import update

from controller import appkeys
from controller.store import Deployment, Instance
from tests.gateway.conftest import MODEL, Stack
from tests.waiting import eventually


def sync_client(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key or stack.key, max_retries=0)


def async_client(stack: Stack, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=key or stack.key, max_retries=0)


async def usage(stack: Stack, **params: str) -> dict[str, Any]:
    status, body = await stack.ctl.admin("GET", "/api/usage", params=params or None)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


MESSAGES: list[Any] = [{"role": "user", "content": "say something nice to me"}]


async def test_models_lists_running_deployments(stack: Stack) -> None:
    async with async_client(stack) as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "lmstack"


async def test_sync_chat_completion_and_usage(stack: Stack) -> None:
    def call() -> Any:
        with sync_client(stack) as client:
            return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)

    reply = await asyncio.to_thread(call)
    assert reply.model == MODEL
    assert reply.choices[0].message.content == "lorem ipsum dolor sit amet"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 5)
    report = await usage(stack)
    [row] = report["items"]
    assert row["deployment_name"] == MODEL and row["deployment_id"] == stack.deployment_id
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, 5, 5)
    assert row["api_key_id"] is not None


async def test_async_streaming_chat_is_exact_and_hides_the_usage_chunk(stack: Stack) -> None:
    async with async_client(stack) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=7, stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "lorem ipsum dolor sit amet consectetur adipiscing"
    # The client did not ask for usage: the gateway asked for it and kept it.
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    report = await usage(stack)
    assert report["totals"] == {
        "requests": 1, "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12
    }  # fmt: skip


async def test_streaming_with_include_usage_passes_the_usage_chunk(stack: Stack) -> None:
    def call() -> list[Any]:
        with sync_client(stack) as client:
            stream = client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=3, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            return list(stream)

    chunks = await asyncio.to_thread(call)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert (await usage(stack))["totals"]["completion_tokens"] == 3


async def test_completions_streamed_and_not(stack: Stack) -> None:
    async with async_client(stack) as client:
        reply = await client.completions.create(model=MODEL, prompt="one two three", max_tokens=4)
        assert reply.choices[0].text == "lorem ipsum dolor sit"
        stream = await client.completions.create(
            model=MODEL, prompt="one two", max_tokens=2, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == "lorem ipsum"
    totals = (await usage(stack))["totals"]
    assert totals == {
        "requests": 2, "prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11
    }  # fmt: skip


async def test_embeddings(stack: Stack) -> None:
    def call() -> Any:
        with sync_client(stack) as client:
            return client.embeddings.create(model=MODEL, input=["hello world", "bye"])

    reply = await asyncio.to_thread(call)
    assert len(reply.data) == 2 and len(reply.data[0].embedding) == 8
    assert reply.data[0].embedding != reply.data[1].embedding
    assert (await usage(stack))["totals"]["prompt_tokens"] == 3


async def test_login_token_works_and_is_accounted_without_a_key(stack: Stack) -> None:
    async with async_client(stack, stack.ctl.admin_token) as client:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    [row] = (await usage(stack))["items"]
    assert row["api_key_id"] is None


async def test_invalid_key_is_authentication_error(stack: Stack) -> None:
    async with async_client(stack, "lmsk_not-a-real-key") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    with sync_client(stack, "nope") as refused, pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(refused.models.list)


async def test_unknown_model_is_not_found(stack: Stack) -> None:
    async with async_client(stack) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert info.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="", messages=MESSAGES)
        assert bad.value.status_code == 400


async def test_key_allow_list(stack: Stack) -> None:
    _, limited = await stack.ctl.admin(
        "POST", "/api/api-keys", json={"name": "other-only", "allowed_deployments": ["other"]}
    )
    assert limited["allowed_deployments"] == ["other"]
    async with async_client(stack, limited["key"]) as client:
        assert (await client.models.list()).data == []
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    _, allowed = await stack.ctl.admin(
        "POST", "/api/api-keys", json={"name": "tiny-only", "allowed_deployments": [MODEL]}
    )
    async with async_client(stack, allowed["key"]) as client:
        assert [m.id for m in (await client.models.list()).data] == [MODEL]
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)


async def test_deployment_not_running_is_503(stack: Stack) -> None:
    # As when the agent reports a restart: the status changes, the fleet says so.
    async with stack.ctl.app[appkeys.DATABASE].session() as session:
        row = await session.get(Deployment, stack.deployment_id)
        assert row is not None
        row.status = "starting"
        # The agent reports per instance: its instances are what the gateway routes to.
        await session.execute(
            update(Instance).where(Instance.deployment_id == row.id).values(status="starting")
        )
        await session.commit()
    stack.ctl.app[appkeys.FLEET].changed()
    async with async_client(stack) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert info.value.status_code == 503
        assert info.value.code == "model_not_ready"
        assert (await client.models.list()).data == []


async def test_worker_offline_is_503(stack: Stack) -> None:
    stack.agent.task.cancel()
    await eventually(lambda: not stack.ctl.app[appkeys.FLEET].is_connected(stack.agent.worker_id))
    async with async_client(stack) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 503
    assert "offline" in str(info.value.message)


async def test_engine_unreachable_is_502(stack: Stack) -> None:
    await stack.engine.stop()
    async with async_client(stack) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert info.value.status_code == 502
        with pytest.raises(openai.InternalServerError) as streamed:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        assert streamed.value.status_code == 502
