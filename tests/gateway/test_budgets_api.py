"""Token budgets as the REST API shows them, counted from real gateway traffic:
a key's budget counts that key's calls, a user's all of theirs (keys and login
tokens), only in the current UTC period; ``GET /api/usage`` lists the budgets
the caller may see. And an edited key's grants apply to its next call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from controller import appkeys
from controller.store import Usage
from tests.gateway.conftest import MODEL, Stack
from tests.gateway.test_usage_api import chat

TOKENS_PER_CHAT = 5  # 3 prompt tokens, 2 completion tokens
PASSWORD = "alice-password"


async def new_user(stack: Stack, name: str, **limits: Any) -> tuple[str, str]:
    """A user (id, login token) with these limits."""
    status, user = await stack.ctl.admin(
        "POST", "/api/users", json={"username": name, "password": PASSWORD, "limits": limits}
    )
    assert status == 201, user
    return user["id"], await stack.ctl.login(name, PASSWORD)


async def new_key(stack: Stack, token: str, name: str, **limits: Any) -> dict[str, Any]:
    status, key = await stack.ctl.call(
        "POST", "/api/api-keys", token=token, json={"name": name, "limits": limits}
    )
    assert status == 201, key
    assert isinstance(key, dict)
    return key


async def add_old_usage(stack: Stack, key: dict[str, Any], user_id: str, days_ago: int) -> None:
    day = (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()
    async with stack.ctl.app[appkeys.DATABASE].session() as session:
        session.add(
            Usage(
                api_key_id=key["id"], user_id=user_id, deployment_id=stack.deployment_id,
                deployment_name=MODEL, day=day, requests=1, prompt_tokens=400, completion_tokens=0,
            )
        )  # fmt: skip
        await session.commit()


async def test_budgets_count_their_own_calls_in_this_period(stack: Stack) -> None:
    ctl = stack.ctl
    user_id, alice = await new_user(stack, "alice", token_budget=1000, budget_period="day")
    daily = await new_key(stack, alice, "daily", token_budget=100, budget_period="day")
    other = await new_key(stack, alice, "other")
    await add_old_usage(stack, daily, user_id, days_ago=1)  # yesterday: not today's budget
    await chat(stack, daily["key"], 2)
    await chat(stack, other["key"], 1)
    await chat(stack, alice, 1)  # a login token counts for the user too

    status, key = await ctl.call("GET", f"/api/api-keys/{daily['id']}", token=alice)
    assert status == 200
    assert key["budget"]["used"] == 2 * TOKENS_PER_CHAT
    assert key["budget"]["remaining"] == 100 - 2 * TOKENS_PER_CHAT
    _, listing = await ctl.call("GET", "/api/api-keys", token=alice)
    budgets = {k["name"]: k["budget"] for k in listing["items"]}
    assert budgets == {"daily": key["budget"], "other": None}
    _, user = await ctl.admin("GET", f"/api/users/{user_id}")
    assert user["budget"]["used"] == 4 * TOKENS_PER_CHAT
    assert user["budget"]["remaining"] == 1000 - 4 * TOKENS_PER_CHAT
    _, me = await ctl.call("GET", "/api/auth/me", token=alice)
    assert me["budget"] == user["budget"]


async def test_an_exhausted_budget_has_nothing_remaining(stack: Stack) -> None:
    _, alice = await new_user(stack, "alice")
    small = await new_key(stack, alice, "small", token_budget=3)
    await chat(stack, small["key"], 1)  # 5 tokens: a request may overshoot by its own
    _, key = await stack.ctl.call("GET", f"/api/api-keys/{small['id']}", token=alice)
    assert key["budget"] == {**key["budget"], "period": "month", "used": 5, "remaining": 0}


async def test_usage_lists_the_budgets_its_caller_may_see(stack: Stack) -> None:
    ctl = stack.ctl
    user_id, alice = await new_user(stack, "alice", token_budget=500)
    hers = await new_key(stack, alice, "hers", token_budget=50)
    await new_key(stack, alice, "unlimited")
    _, admin = await ctl.admin("GET", "/api/auth/me")
    await ctl.admin("PATCH", f"/api/users/{admin['id']}", json={"limits": {"token_budget": 9}})
    await chat(stack, hers["key"], 1)

    status, usage = await ctl.call("GET", "/api/usage", token=alice)
    assert status == 200
    assert usage["totals"]["total_tokens"] == TOKENS_PER_CHAT  # unchanged fields
    resets = usage["budgets"][0]["resets_at"]
    assert usage["budgets"] == [
        {"scope": "user", "user_id": user_id, "api_key_id": None, "name": "alice",
         "token_budget": 500, "period": "month", "used": 5, "remaining": 495, "resets_at": resets},
        {"scope": "api_key", "user_id": user_id, "api_key_id": hers["id"], "name": "hers",
         "token_budget": 50, "period": "month", "used": 5, "remaining": 45, "resets_at": resets},
    ]  # fmt: skip
    _, everyone = await ctl.admin("GET", "/api/usage")
    assert {(b["scope"], b["name"]) for b in everyone["budgets"]} == {
        ("user", "admin"), ("user", "alice"), ("api_key", "hers")
    }  # fmt: skip
    _, one_key = await ctl.admin("GET", "/api/usage", params={"api_key_id": hers["id"]})
    assert [(b["scope"], b["name"]) for b in one_key["budgets"]] == [
        ("user", "alice"), ("api_key", "hers")
    ]  # fmt: skip


async def test_a_patched_key_is_held_to_its_new_grants_at_once(stack: Stack) -> None:
    _, keys = await stack.ctl.admin("GET", "/api/api-keys")
    [key] = keys["items"]
    await chat(stack, stack.key, 1)  # now cached by the authenticator
    status, _ = await stack.ctl.admin(
        "PATCH", f"/api/api-keys/{key['id']}", json={"allowed_deployments": ["elsewhere"]}
    )
    assert status == 200
    with pytest.raises(openai.APIStatusError):
        await chat(stack, stack.key, 1)
