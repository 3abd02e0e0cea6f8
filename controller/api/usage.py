"""``GET /api/usage``: gateway requests and tokens per API key, deployment and day,
and the token budgets the caller can see (their own and their keys'; admins: all)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.api._limits import current_usage, key_budgets, user_budgets
from controller.auth import Identity, identity_of
from controller.http import Endpoint, json_response, parse_query
from controller.store import ApiKey, Usage, User
from controller.store.timeutil import utcnow
from controller.usage_schemas import UsageBudget, UsageList, UsageQuery, UsageRow, UsageTotals


async def list_usage(request: web.Request) -> web.Response:
    identity = identity_of(request)
    query = parse_query(request, UsageQuery)
    # Buffered counts first, so the answer includes every finished request.
    await current_usage(request)
    stmt = select(Usage).order_by(Usage.day, Usage.deployment_name, Usage.api_key_id)
    if not identity.is_admin:
        # Users see the usage of their own keys (and their own login sessions).
        stmt = stmt.where(Usage.user_id == identity.user_id)
    if query.api_key_id is not None:
        stmt = stmt.where(Usage.api_key_id == query.api_key_id)
    if query.deployment_id is not None:
        stmt = stmt.where(Usage.deployment_id == query.deployment_id)
    if query.deployment is not None:
        stmt = stmt.where(Usage.deployment_name == query.deployment)
    if query.start is not None:
        stmt = stmt.where(Usage.day >= query.start.isoformat())
    if query.end is not None:
        stmt = stmt.where(Usage.day <= query.end.isoformat())
    async with request.app[appkeys.DATABASE].session() as session:
        rows = list(await session.scalars(stmt))
        budgets = await _budgets(session, identity, query, utcnow())
    items = [
        UsageRow(
            date=row.day,
            api_key_id=row.api_key_id or None,
            user_id=row.user_id,
            deployment_id=row.deployment_id,
            deployment_name=row.deployment_name,
            requests=row.requests,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.prompt_tokens + row.completion_tokens,
        )
        for row in rows
    ]
    totals = UsageTotals(
        requests=sum(i.requests for i in items),
        prompt_tokens=sum(i.prompt_tokens for i in items),
        completion_tokens=sum(i.completion_tokens for i in items),
        total_tokens=sum(i.total_tokens for i in items),
    )
    return json_response(UsageList(items=items, totals=totals, budgets=budgets))


async def _budgets(
    session: AsyncSession, identity: Identity, query: UsageQuery, now: datetime
) -> list[UsageBudget]:
    """Users' budgets, then their keys'; narrowed to one key (and its owner) by
    ``api_key_id``. The date and deployment filters do not apply: a budget is now."""
    users = select(User).where(User.token_budget.is_not(None)).order_by(User.username)
    keys = select(ApiKey).where(ApiKey.token_budget.is_not(None))
    keys = keys.order_by(ApiKey.created_at, ApiKey.id)
    if not identity.is_admin:
        users = users.where(User.id == identity.user_id)
        keys = keys.where(ApiKey.user_id == identity.user_id)
    if query.api_key_id is not None:
        keys = keys.where(ApiKey.id == query.api_key_id)
        owner = select(ApiKey.user_id).where(ApiKey.id == query.api_key_id)
        users = users.where(User.id.in_(owner))
    user_rows = list(await session.scalars(users))
    key_rows = list(await session.scalars(keys))
    by_user = await user_budgets(session, user_rows, now)
    by_key = await key_budgets(session, key_rows, now)
    return [
        *(
            UsageBudget(scope="user", user_id=u.id, api_key_id=None, name=u.username,
                        token_budget=u.token_budget, **by_user[u.id].model_dump())
            for u in user_rows if u.token_budget is not None and u.id in by_user
        ),
        *(
            UsageBudget(scope="api_key", user_id=k.user_id, api_key_id=k.id, name=k.name,
                        token_budget=k.token_budget, **by_key[k.id].model_dump())
            for k in key_rows if k.token_budget is not None and k.id in by_key
        ),
    ]  # fmt: skip


ENDPOINTS = [
    Endpoint(
        "GET", "/api/usage", list_usage,
        "Gateway usage per API key, deployment and day (admins: all; users: their own),"
        " and the token budgets left",
        "usage", query=UsageQuery, responses={200: UsageList}, errors=(422,),
    ),
]  # fmt: skip
