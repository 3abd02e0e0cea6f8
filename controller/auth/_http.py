"""Where auth meets aiohttp: the bearer token of a request and its ``Identity``."""

from __future__ import annotations

from aiohttp import web

from controller.auth._identity import Identity
from shared.errors import Unauthorized


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity:
    return request[IDENTITY]
