"""``/api/api-keys``: a user's keys. The full key is shown once, at creation."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.api._revoke import delete_granting_row
from controller.auth import API_KEY_PREFIX, identity_of, key_hint, new_api_key, token_digest
from controller.http import Endpoint, json_response, parse_body, path_id
from controller.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from controller.store import ApiKey, commit_or_conflict
from shared.errors import Conflict, NotFound


async def list_keys(request: web.Request) -> web.Response:
    identity = identity_of(request)
    auth = request.app[appkeys.AUTH]
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not identity.is_admin:
        stmt = stmt.where(ApiKey.user_id == identity.user_id)
    async with request.app[appkeys.DATABASE].session() as session:
        rows = list(await session.scalars(stmt))
    items = []
    for row in rows:
        out = ApiKeyOut.model_validate(row, from_attributes=True)
        pending = auth.pending_last_used(row.id)
        if pending is not None and (out.last_used is None or pending > out.last_used):
            out.last_used = pending
        items.append(out)
    return json_response(ApiKeyList(items=items))


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
    async with request.app[appkeys.DATABASE].session() as session:
        taken = await session.scalar(
            select(ApiKey.id).where(ApiKey.user_id == identity.user_id, ApiKey.name == body.name)
        )
        if taken:
            raise Conflict(f"You already have an API key named '{body.name}'")
        session.add(row)
        await commit_or_conflict(session, f"You already have an API key named '{body.name}'")
    created = ApiKeyCreated(
        id=row.id,
        name=row.name,
        key=key,
        prefix=row.prefix,
        hint=row.hint,
        allowed_deployments=row.allowed_deployments,
        created_at=row.created_at,
    )
    return json_response(created, 201)


async def delete_key(request: web.Request) -> web.Response:
    identity = identity_of(request)
    key_id = path_id(request, "key_id", "API key")

    async def own_key(session: AsyncSession) -> ApiKey:
        row = await session.get(ApiKey, key_id)
        # Another user's key is reported missing, not forbidden: ids do not leak.
        if row is None or (not identity.is_admin and row.user_id != identity.user_id):
            raise NotFound(f"API key '{key_id}' not found")
        return row

    return await delete_granting_row(request, own_key)


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
        "Create an API key; the key is returned once",
        "api-keys",
        body=ApiKeyCreate,
        responses={201: ApiKeyCreated},
        errors=(409, 422),
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
