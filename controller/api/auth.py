"""``/api/auth``: log in for a bearer token; who am I."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller import appkeys
from controller.api.users import user_out
from controller.auth import identity_of
from controller.http import Endpoint, json_response, parse_body
from controller.schemas import LoginRequest, LoginResponse, UserOut
from controller.store import User
from shared.errors import Unauthorized


async def login(request: web.Request) -> web.Response:
    body = await parse_body(request, LoginRequest)
    token, ttl = await request.app[appkeys.AUTH].login(body.username, body.password)
    return json_response(LoginResponse(access_token=token, expires_in=ttl))


async def me(request: web.Request) -> web.Response:
    identity = identity_of(request)
    async with request.app[appkeys.DATABASE].session() as session:
        user = await session.scalar(select(User).where(User.id == identity.user_id))
        if user is None:
            raise Unauthorized("The account behind this token no longer exists")
        return json_response(await user_out(request, session, user))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/auth/login",
        login,
        "Log in with username and password",
        "auth",
        access="public",
        body=LoginRequest,
        responses={200: LoginResponse},
        errors=(401, 422),
    ),
    Endpoint("GET", "/api/auth/me", me, "The signed-in user", "auth", responses={200: UserOut}),
]
