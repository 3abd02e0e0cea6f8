"""``GET /api/usage``: what the gateway counted, filtered by key, deployment and
dates; admins see everyone's, users only their own keys' and sessions'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openai

from controller import appkeys
from controller.store import Usage
from tests.gateway.conftest import MODEL, Stack

MESSAGES: Any = [{"role": "user", "content": "one two three"}]  # 3 prompt tokens
USER_PASSWORD = "user-password-1"


async def chat(stack: Stack, key: str, times: int) -> None:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0) as sdk:
        for _ in range(times):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)


async def listing(stack: Stack, token: str, **params: str) -> tuple[int, Any]:
    return await stack.ctl.call("GET", "/api/usage", token=token, params=params or None)


async def test_filters_dates_and_who_sees_what(stack: Stack) -> None:
    ctl = stack.ctl
    status, user = await ctl.admin(
        "POST", "/api/users", json={"username": "alice", "password": USER_PASSWORD}
    )
    assert status == 201
    alice = await ctl.login("alice", USER_PASSWORD)
    _, alice_key = await ctl.call("POST", "/api/api-keys", token=alice, json={"name": "hers"})
    _, admin_keys = await ctl.admin("GET", "/api/api-keys")
    [admin_key] = [k for k in admin_keys["items"] if k["user_id"] != user["id"]]
    admin_key_id = admin_key["id"]

    await chat(stack, stack.key, 2)  # the admin's key
    await chat(stack, alice_key["key"], 1)
    # And an older day of the admin's key, as if recorded a week ago.
    today = datetime.now(UTC).date()
    week_ago = (today - timedelta(days=7)).isoformat()
    async with ctl.app[appkeys.DATABASE].session() as session:
        session.add(
            Usage(
                api_key_id=admin_key_id, user_id=admin_key["user_id"],
                deployment_id=stack.deployment_id, deployment_name=MODEL, day=week_ago,
                requests=5, prompt_tokens=50, completion_tokens=10,
            )
        )  # fmt: skip
        await session.commit()

    token = ctl.admin_token
    status, everything = await listing(stack, token)
    assert status == 200
    assert everything["totals"] == {
        "requests": 8, "prompt_tokens": 59, "completion_tokens": 16, "total_tokens": 75
    }  # fmt: skip
    assert everything["items"][0]["date"] == week_ago  # oldest first

    _, by_key = await listing(stack, token, api_key_id=admin_key_id)
    assert by_key["totals"]["requests"] == 7
    _, by_deployment = await listing(stack, token, deployment=MODEL)
    assert by_deployment["totals"]["requests"] == 8
    _, by_id = await listing(stack, token, deployment_id=stack.deployment_id)
    assert by_id["totals"]["requests"] == 8
    _, other = await listing(stack, token, deployment="other")
    assert other["items"] == [] and other["totals"]["requests"] == 0

    iso = today.isoformat()
    _, today_only = await listing(stack, token, start=iso, end=iso)
    assert today_only["totals"]["requests"] == 3
    _, until_yesterday = await listing(stack, token, end=(today - timedelta(days=1)).isoformat())
    assert until_yesterday["totals"]["requests"] == 5
    _, from_tomorrow = await listing(stack, token, start=(today + timedelta(days=1)).isoformat())
    assert from_tomorrow["items"] == []

    status, backwards = await listing(stack, token, start=iso, end=week_ago)
    assert status == 422 and "end is before start" in str(backwards)
    status, garbled = await listing(stack, token, start="last tuesday")
    assert status == 422 and garbled["errors"][0]["loc"][-1] == "start"

    # A user sees their own usage only, whatever they filter on.
    status, hers = await listing(stack, alice)
    assert status == 200
    assert hers["totals"]["requests"] == 1
    assert {row["api_key_id"] for row in hers["items"]} == {alice_key["id"]}
    _, snooping = await listing(stack, alice, api_key_id=admin_key_id)
    assert snooping["items"] == []
