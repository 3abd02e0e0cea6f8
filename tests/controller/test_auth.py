"""Authentication and authorisation over the real HTTP server."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from controller import appkeys
from controller.store import LoginToken
from controller.store.timeutil import utcnow
from tests.conftest import ADMIN_PASSWORD, Controller


async def make_user(ctl: Controller, name: str, *, admin: bool = False) -> str:
    status, body = await ctl.admin(
        "POST",
        "/api/users",
        json={"username": name, "password": f"{name}-password", "is_admin": admin},
    )
    assert status == 201, body
    return await ctl.login(name, f"{name}-password")


async def test_health_needs_no_token(controller: Controller) -> None:
    assert await controller.call("GET", "/health") == (200, {"status": "healthy"})


async def test_login_returns_bearer_token(controller: Controller) -> None:
    status, body = await controller.call(
        "POST", "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == controller.settings().token_ttl_seconds
    status, me = await controller.call("GET", "/api/auth/me", token=body["access_token"])
    assert status == 200
    assert me["username"] == "admin" and me["is_admin"] is True
    assert "password_hash" not in me


@pytest.mark.parametrize(
    ("username", "password"), [("admin", "wrong-password"), ("nobody", ADMIN_PASSWORD)]
)
async def test_bad_credentials_are_401(
    controller: Controller, username: str, password: str
) -> None:
    status, body = await controller.call(
        "POST", "/api/auth/login", json={"username": username, "password": password}
    )
    assert status == 401
    assert body == {"detail": "Invalid username or password", "status_code": 401}


@pytest.mark.parametrize(
    "path",
    [
        "/api/deployments",
        "/api/workers",
        "/api/api-keys",
        "/api/users",
        "/api/auth/me",
        "/api/openapi.json",
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer lmsk_nope", "Bearer x"])
async def test_missing_or_invalid_credentials_are_401(
    controller: Controller, path: str, header: str | None
) -> None:
    assert controller.http is not None
    headers = {"Authorization": header} if header else {}
    async with controller.http.get(controller.url + path, headers=headers) as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["status_code"] == 401 and body["detail"]


async def test_expired_login_token_is_401(controller: Controller) -> None:
    token = await controller.login("admin", ADMIN_PASSWORD)
    async with controller.app[appkeys.DATABASE].session() as session:
        await session.execute(update(LoginToken).values(expires_at=utcnow()))
        await session.commit()
    controller.app[appkeys.AUTH].invalidate()
    status, _ = await controller.call("GET", "/api/auth/me", token=token)
    assert status == 401


async def test_api_key_is_a_bearer_token(controller: Controller) -> None:
    status, created = await controller.admin("POST", "/api/api-keys", json={"name": "ci"})
    assert status == 201
    status, me = await controller.call("GET", "/api/auth/me", token=created["key"])
    assert status == 200 and me["username"] == "admin"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/deployments", {"name": "x", "model": "m"}),
        ("DELETE", "/api/deployments/00000000-0000-0000-0000-000000000000", None),
        ("GET", "/api/users", None),
        ("POST", "/api/users", {"username": "u2", "password": "password-2"}),
        ("PATCH", "/api/users/00000000-0000-0000-0000-000000000000", {"email": "a@b.co"}),
        ("DELETE", "/api/users/00000000-0000-0000-0000-000000000000", None),
    ],
)
async def test_non_admin_is_403_on_admin_routes(
    controller: Controller, method: str, path: str, body: object
) -> None:
    token = await make_user(controller, "alice")
    status, err = await controller.call(method, path, token=token, json=body)
    assert status == 403
    assert err == {"detail": "This action needs an admin account", "status_code": 403}


async def test_non_admin_reads(controller: Controller) -> None:
    token = await make_user(controller, "bob")
    for path in ("/api/deployments", "/api/workers", "/api/api-keys", "/api/auth/me"):
        status, _ = await controller.call("GET", path, token=token)
        assert status == 200, path


async def test_deleted_user_token_stops_working(controller: Controller) -> None:
    token = await make_user(controller, "carol")
    status, me = await controller.call("GET", "/api/auth/me", token=token)
    assert status == 200
    status, _ = await controller.admin("DELETE", f"/api/users/{me['id']}")
    assert status == 204
    status, _ = await controller.call("GET", "/api/auth/me", token=token)
    assert status == 401
