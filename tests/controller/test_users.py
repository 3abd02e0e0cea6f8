"""``/api/users``: admin-managed accounts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Controller
from tests.controller.test_deployments import MISSING


async def new_user(ctl: Controller, **fields: Any) -> dict[str, Any]:
    payload = {"username": "newuser", "email": "user@example.com", "password": "secure-password"}
    payload.update(fields)
    status, body = await ctl.admin("POST", "/api/users", json=payload)
    assert status == 201, body
    assert isinstance(body, dict)
    return body


async def test_create_list_update_delete(controller: Controller) -> None:
    user = await new_user(controller)
    assert set(user) == {"id", "username", "email", "is_admin", "limits", "budget", "created_at"}
    assert user["is_admin"] is False and user["email"] == "user@example.com"

    status, listing = await controller.admin("GET", "/api/users")
    assert status == 200
    assert [u["username"] for u in listing["items"]] == ["admin", "newuser"]

    status, updated = await controller.admin(
        "PATCH", f"/api/users/{user['id']}", json={"email": "newemail@example.com"}
    )
    assert status == 200 and updated["email"] == "newemail@example.com"
    status, one = await controller.admin("GET", f"/api/users/{user['id']}")
    assert one == updated

    status, _ = await controller.admin("DELETE", f"/api/users/{user['id']}")
    assert status == 204
    status, _ = await controller.admin("GET", f"/api/users/{user['id']}")
    assert status == 404


async def test_duplicates_are_409(controller: Controller) -> None:
    await new_user(controller)
    status, body = await controller.admin(
        "POST", "/api/users", json={"username": "newuser", "password": "another-pass"}
    )
    assert status == 409 and "newuser" in body["detail"]
    status, body = await controller.admin(
        "POST",
        "/api/users",
        json={"username": "other", "email": "user@example.com", "password": "another-pass"},
    )
    assert status == 409 and "user@example.com" in body["detail"]
    other = await new_user(controller, username="other2", email="o@example.com")
    status, _ = await controller.admin(
        "PATCH", f"/api/users/{other['id']}", json={"email": "user@example.com"}
    )
    assert status == 409


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "u", "password": "short"}, "password"),
        ({"username": "has space", "password": "long-enough"}, "username"),
        ({"username": "u", "password": "long-enough", "email": "not-an-email"}, "email"),
        ({"username": "u", "password": "long-enough", "is_admin": "yes"}, "is_admin"),
        ({"password": "long-enough"}, "username"),
        ({"username": "u", "password": "long-enough", "role": "root"}, "role"),
    ],
)
async def test_invalid_user_is_422(
    controller: Controller, payload: dict[str, Any], field: str
) -> None:
    status, body = await controller.admin("POST", "/api/users", json=payload)
    assert status == 422
    assert [field] in [err["loc"] for err in body["errors"]]


async def test_password_change_signs_out_and_new_password_works(controller: Controller) -> None:
    user = await new_user(controller)
    token = await controller.login("newuser", "secure-password")
    status, _ = await controller.admin(
        "PATCH", f"/api/users/{user['id']}", json={"password": "brand-new-password"}
    )
    assert status == 200
    status, _ = await controller.call("GET", "/api/auth/me", token=token)
    assert status == 401
    assert await controller.login("newuser", "brand-new-password")


async def test_promote_and_last_admin_guards(controller: Controller) -> None:
    user = await new_user(controller)
    status, me = await controller.admin("GET", "/api/auth/me")
    status, body = await controller.admin(
        "PATCH", f"/api/users/{me['id']}", json={"is_admin": False}
    )
    assert status == 409 and "last admin" in body["detail"]
    status, body = await controller.admin("DELETE", f"/api/users/{me['id']}")
    assert status == 409
    status, promoted = await controller.admin(
        "PATCH", f"/api/users/{user['id']}", json={"is_admin": True}
    )
    assert status == 200 and promoted["is_admin"] is True
    token = await controller.login("newuser", "secure-password")
    status, _ = await controller.call("GET", "/api/users", token=token)
    assert status == 200


async def test_deleting_a_user_deletes_their_keys(controller: Controller) -> None:
    await new_user(controller)
    token = await controller.login("newuser", "secure-password")
    _, key = await controller.call("POST", "/api/api-keys", token=token, json={"name": "k"})
    _, me = await controller.call("GET", "/api/auth/me", token=key["key"])
    await controller.admin("DELETE", f"/api/users/{me['id']}")
    status, _ = await controller.call("GET", "/api/auth/me", token=key["key"])
    assert status == 401
    _, keys = await controller.admin("GET", "/api/api-keys")
    assert keys["items"] == []


@pytest.mark.parametrize("user_id", [MISSING, "x"])
async def test_unknown_user_is_404(controller: Controller, user_id: str) -> None:
    for method, body in (("GET", None), ("PATCH", {"email": "a@b.co"}), ("DELETE", None)):
        status, _ = await controller.admin(method, f"/api/users/{user_id}", json=body)
        assert status == 404, method
