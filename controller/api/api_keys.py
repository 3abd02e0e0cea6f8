"""``/api/api-keys``: a user's keys. The full key is shown once, at creation.

A key is its owner's (or any admin's) to see, edit and delete; to anyone else it
does not exist (404), so ids do not leak. Every answer shows the key's limits
and, when it has a token budget, what is left of it this period.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.api._limits import current_usage, key_budgets, limits_of, set_limits
from controller.api._revoke import delete_granting_row
from controller.auth import (
    API_KEY_PREFIX,
    Authenticator,
    Identity,
    identity_of,
    key_hint,
    new_api_key,
    token_digest,
)
from controller.http import Endpoint, json_response, parse_body, path_id
from controller.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut, ApiKeyUpdate
from controller.store import ApiKey, commit_or_conflict
from controller.store.timeutil import utcnow
from shared.errors import Conflict, NotFound


def _taken(name: str) -> str:
    return f"You already have an API key named '{name}'"


async def _ensure_free(session: AsyncSession, user_id: str, name: str) -> None:
    taken = await session.scalar(
        select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.name == name)
    )
    if taken:
        raise Conflict(_taken(name))


async def _own_key(session: AsyncSession, identity: Identity, key_id: str) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    # Another user's key is reported missing, not forbidden: ids do not leak.
    if row is None or (not identity.is_admin and row.user_id != identity.user_id):
        raise NotFound(f"API key '{key_id}' not found")
    return row


def _last_used(row: ApiKey, auth: Authenticator) -> datetime | None:
    pending = auth.pending_last_used(row.id)
    if pending is not None and (row.last_used is None or pending > row.last_used):
        return pending
    return row.last_used


async def _key_outs(
    request: web.Request, session: AsyncSession, rows: list[ApiKey]
) -> list[ApiKeyOut]:
    auth = request.app[appkeys.AUTH]
    await current_usage(request)
    budgets = await key_budgets(session, rows, utcnow())
    return [
        ApiKeyOut(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            hint=row.hint,
            user_id=row.user_id,
            allowed_deployments=row.allowed_deployments,
            limits=limits_of(row),
            budget=budgets.get(row.id),
            created_at=row.created_at,
            last_used=_last_used(row, auth),
        )
        for row in rows
    ]


async def list_keys(request: web.Request) -> web.Response:
    identity = identity_of(request)
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not identity.is_admin:
        stmt = stmt.where(ApiKey.user_id == identity.user_id)
    async with request.app[appkeys.DATABASE].session() as session:
        rows = list(await session.scalars(stmt))
        return json_response(ApiKeyList(items=await _key_outs(request, session, rows)))


async def get_key(request: web.Request) -> web.Response:
    identity = identity_of(request)
    key_id = path_id(request, "key_id", "API key")
    async with request.app[appkeys.DATABASE].session() as session:
        row = await _own_key(session, identity, key_id)
        [out] = await _key_outs(request, session, [row])
    return json_response(out)


async def create_key(request: web.Request) -> web.Response:
    identity = identity_of(request)
    body = await parse_body(request, ApiKeyCreate)
    key = new_api_key()
    row = ApiKey(
        user_id=identity.user_id,
        name=body.name,
        key_hash=token_digest(key),
        prefix=API_KEY_PREFIX,
        hint=key_hint(key),
        allowed_deployments=body.allowed_deployments,
    )
    set_limits(row, body.limits)
    async with request.app[appkeys.DATABASE].session() as session:
        await _ensure_free(session, identity.user_id, body.name)
        session.add(row)
        await commit_or_conflict(session, _taken(body.name))
        [out] = await _key_outs(request, session, [row])
    created = ApiKeyCreated(
        id=row.id,
        name=row.name,
        key=key,
        prefix=row.prefix,
        hint=row.hint,
        allowed_deployments=row.allowed_deployments,
        limits=out.limits,
        budget=out.budget,
        created_at=row.created_at,
    )
    return json_response(created, 201)


async def update_key(request: web.Request) -> web.Response:
    identity = identity_of(request)
    key_id = path_id(request, "key_id", "API key")
    body = await parse_body(request, ApiKeyUpdate)
    given = body.model_fields_set
    async with request.app[appkeys.DATABASE].session() as session:
        row = await _own_key(session, identity, key_id)
        if body.name is not None and body.name != row.name:
            await _ensure_free(session, row.user_id, body.name)
            row.name = body.name
        if "allowed_deployments" in given:
            row.allowed_deployments = body.allowed_deployments
        if "limits" in given:
            set_limits(row, body.limits)
        await commit_or_conflict(session, _taken(row.name))
        # Cached identities carry the key's grants and limits: they end now.
        request.app[appkeys.AUTH].invalidate()
        [out] = await _key_outs(request, session, [row])
    return json_response(out)


async def delete_key(request: web.Request) -> web.Response:
    identity = identity_of(request)
    key_id = path_id(request, "key_id", "API key")
    return await delete_granting_row(request, lambda s: _own_key(s, identity, key_id))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/api-keys",
        list_keys,
        "List API keys (admins: all; users: their own)",
        "api-keys",
        responses={200: ApiKeyList},
    ),
    Endpoint(
        "POST",
        "/api/api-keys",
        create_key,
        "Create an API key, optionally with limits; the key is returned once",
        "api-keys",
        body=ApiKeyCreate,
        responses={201: ApiKeyCreated},
        errors=(409, 422),
    ),
    Endpoint(
        "GET",
        "/api/api-keys/{key_id}",
        get_key,
        "Get an API key, its limits and what is left of its token budget",
        "api-keys",
        responses={200: ApiKeyOut},
        errors=(404,),
    ),
    Endpoint(
        "PATCH",
        "/api/api-keys/{key_id}",
        update_key,
        "Rename an API key or change its deployments or limits",
        "api-keys",
        body=ApiKeyUpdate,
        responses={200: ApiKeyOut},
        errors=(404, 409, 422),
    ),
    Endpoint(
        "DELETE",
        "/api/api-keys/{key_id}",
        delete_key,
        "Delete an API key",
        "api-keys",
        responses={204: None},
        errors=(404,),
    ),
]
