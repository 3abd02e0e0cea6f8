"""Limits on API keys and users as the REST API stores, shows and edits them:
strict values (422 naming the field), owner-or-admin for a key, admin-only for
a user, and kept across a restart. Budgets counted from gateway traffic are in
``tests/gateway/test_budgets_api.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.limits.periods import period_bounds
from controller.store.timeutil import iso_z
from tests.conftest import Controller
from tests.controller.test_auth import make_user

LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "token_budget", "budget_period")
NO_LIMITS = dict.fromkeys(LIMIT_FIELDS)
ALL_LIMITS = {"rpm": 60, "tpm": 10_000, "max_parallel": 2, "token_budget": 5000}


def next_period(period: str) -> str:
    return iso_z(period_bounds(period, datetime.now(UTC))[1])


async def create_key(ctl: Controller, token: str, name: str, **body: Any) -> dict[str, Any]:
    status, created = await ctl.call(
        "POST", "/api/api-keys", token=token, json={"name": name, **body}
    )
    assert status == 201, created
    assert isinstance(created, dict)
    return created


async def test_a_key_created_with_limits_shows_them_and_its_budget(controller: Controller) -> None:
    created = await create_key(controller, controller.admin_token, "k", limits=ALL_LIMITS)
    # A budget without a period counts per UTC month.
    limits = {**ALL_LIMITS, "budget_period": "month"}
    budget = {"period": "month", "used": 0, "remaining": 5000, "resets_at": next_period("month")}
    assert created["limits"] == limits and created["budget"] == budget
    status, shown = await controller.admin("GET", f"/api/api-keys/{created['id']}")
    assert status == 200
    assert shown["limits"] == limits and shown["budget"] == budget
    _, listing = await controller.admin("GET", "/api/api-keys")
    [item] = listing["items"]
    assert item == shown


async def test_a_key_without_limits_shows_nulls(controller: Controller) -> None:
    created = await create_key(controller, controller.admin_token, "plain")
    assert created["limits"] == NO_LIMITS and created["budget"] is None
    daily = await create_key(
        controller,
        controller.admin_token,
        "daily",
        limits={"token_budget": 7, "budget_period": "day"},
    )
    assert daily["limits"] == {**NO_LIMITS, "token_budget": 7, "budget_period": "day"}
    assert daily["budget"]["resets_at"] == next_period("day")


async def test_patch_replaces_the_limits_and_null_or_empty_clears_them(
    controller: Controller,
) -> None:
    key = await create_key(controller, controller.admin_token, "k", limits=ALL_LIMITS)
    url = f"/api/api-keys/{key['id']}"
    status, patched = await controller.admin("PATCH", url, json={"limits": {"rpm": 5}})
    assert status == 200
    # Replaced as a whole: the fields not given are unlimited now.
    assert patched["limits"] == {**NO_LIMITS, "rpm": 5} and patched["budget"] is None
    clears: list[dict[str, Any] | None] = [None, {}]
    for cleared in clears:
        await controller.admin("PATCH", url, json={"limits": {"tpm": 9}})
        status, patched = await controller.admin("PATCH", url, json={"limits": cleared})
        assert status == 200 and patched["limits"] == NO_LIMITS
    _, shown = await controller.admin("GET", url)
    assert shown["limits"] == NO_LIMITS


async def test_patch_renames_and_regrants_and_leaves_the_rest(controller: Controller) -> None:
    key = await create_key(controller, controller.admin_token, "k", limits={"rpm": 3})
    await create_key(controller, controller.admin_token, "taken")
    url = f"/api/api-keys/{key['id']}"
    status, patched = await controller.admin(
        "PATCH", url, json={"name": "renamed", "allowed_deployments": ["m1"]}
    )
    assert status == 200
    assert patched["name"] == "renamed" and patched["allowed_deployments"] == ["m1"]
    assert patched["limits"]["rpm"] == 3  # not given: kept
    status, body = await controller.admin("PATCH", url, json={"name": "taken"})
    assert status == 409, body
    status, patched = await controller.admin("PATCH", url, json={"allowed_deployments": None})
    assert status == 200 and patched["allowed_deployments"] is None and patched["name"] == "renamed"
    status, _ = await controller.admin("PATCH", "/api/api-keys/no-such-key", json={})
    assert status == 404


async def test_another_users_key_is_missing_and_an_admin_may_edit_any(
    controller: Controller,
) -> None:
    alice = await make_user(controller, "alice")
    bob = await make_user(controller, "bob")
    hers = await create_key(controller, alice, "hers")
    url = f"/api/api-keys/{hers['id']}"
    for method, body in (("GET", None), ("PATCH", {"limits": {"rpm": 1}})):
        status, answer = await controller.call(method, url, token=bob, json=body)
        assert status == 404, answer
    status, mine = await controller.call("PATCH", url, token=alice, json={"limits": {"rpm": 9}})
    assert status == 200 and mine["limits"]["rpm"] == 9
    status, by_admin = await controller.admin("PATCH", url, json={"limits": {"rpm": 1}})
    assert status == 200 and by_admin["limits"]["rpm"] == 1
    _, shown = await controller.call("GET", url, token=alice)
    assert shown["limits"]["rpm"] == 1


async def test_only_an_admin_sets_a_users_limits(controller: Controller) -> None:
    alice = await make_user(controller, "alice")
    _, me = await controller.call("GET", "/api/auth/me", token=alice)
    assert me["limits"] == NO_LIMITS and me["budget"] is None
    url = f"/api/users/{me['id']}"
    status, _ = await controller.call("PATCH", url, token=alice, json={"limits": {"rpm": 1000}})
    assert status == 403
    limits = {"max_parallel": 4, "token_budget": 100, "budget_period": "day"}
    status, user = await controller.admin("PATCH", url, json={"limits": limits})
    assert status == 200
    assert user["limits"] == {**NO_LIMITS, **limits}
    assert user["budget"] == {
        "period": "day", "used": 0, "remaining": 100, "resets_at": next_period("day")
    }  # fmt: skip
    _, me = await controller.call("GET", "/api/auth/me", token=alice)
    assert me["limits"] == user["limits"] and me["budget"] == user["budget"]
    _, users = await controller.admin("GET", "/api/users")
    assert [u["limits"] for u in users["items"] if u["id"] == me["id"]] == [user["limits"]]
    status, cleared = await controller.admin("PATCH", url, json={"limits": None})
    assert status == 200 and cleared["limits"] == NO_LIMITS and cleared["budget"] is None


async def test_a_user_created_with_limits(controller: Controller) -> None:
    status, user = await controller.admin(
        "POST",
        "/api/users",
        json={"username": "carol", "password": "carol-password", "limits": {"rpm": 2}},
    )
    assert status == 201 and user["limits"] == {**NO_LIMITS, "rpm": 2}


BAD_LIMITS: list[tuple[dict[str, Any], str]] = [
    ({"rpm": 0}, "rpm"),
    ({"tpm": -5}, "tpm"),
    ({"max_parallel": "2"}, "max_parallel"),
    ({"rpm": True}, "rpm"),
    ({"token_budget": 1.5}, "token_budget"),
    ({"token_budget": 0}, "token_budget"),
    ({"rpm": 2**31}, "rpm"),
    ({"token_budget": 10, "budget_period": "week"}, "budget_period"),
    ({"budget_period": "day"}, "budget_period"),
    ({"burst": 3}, "burst"),
]


@pytest.mark.parametrize(("limits", "field"), BAD_LIMITS)
async def test_bad_limits_are_422_naming_the_field(
    controller: Controller, limits: dict[str, Any], field: str
) -> None:
    key = await create_key(controller, controller.admin_token, "k")
    _, me = await controller.admin("GET", "/api/auth/me")
    calls = [
        ("POST", "/api/api-keys", {"name": "bad", "limits": limits}),
        ("PATCH", f"/api/api-keys/{key['id']}", {"limits": limits}),
        ("PATCH", f"/api/users/{me['id']}", {"limits": limits}),
    ]
    for method, url, body in calls:
        status, error = await controller.admin(method, url, json=body)
        assert status == 422, (method, url, error)
        assert [e["loc"] for e in error["errors"]] == [["limits", field]], error
        assert f"limits.{field}" in error["detail"]
    _, shown = await controller.admin("GET", f"/api/api-keys/{key['id']}")
    assert shown["limits"] == NO_LIMITS


async def test_limits_survive_a_restart(controller: Controller) -> None:
    key = await create_key(controller, controller.admin_token, "k", limits=ALL_LIMITS)
    alice = await make_user(controller, "alice")
    _, me = await controller.call("GET", "/api/auth/me", token=alice)
    await controller.admin("PATCH", f"/api/users/{me['id']}", json={"limits": {"tpm": 77}})
    await controller.restart()
    _, shown = await controller.admin("GET", f"/api/api-keys/{key['id']}")
    assert shown["limits"] == key["limits"]
    _, user = await controller.admin("GET", f"/api/users/{me['id']}")
    assert user["limits"] == {**NO_LIMITS, "tpm": 77}
