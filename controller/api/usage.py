"""``GET /api/usage``: gateway requests and tokens per API key, deployment and day."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller import appkeys
from controller.auth import identity_of
from controller.gateway import GATEWAY
from controller.http import Endpoint, json_response, parse_query
from controller.schemas import UsageList, UsageQuery, UsageRow, UsageTotals
from controller.store import Usage


async def list_usage(request: web.Request) -> web.Response:
    identity = identity_of(request)
    query = parse_query(request, UsageQuery)
    # Buffered counts first, so the answer includes every finished request.
    await request.app[GATEWAY].usage.flush()
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
    return json_response(UsageList(items=items, totals=totals))


ENDPOINTS = [
    Endpoint(
        "GET", "/api/usage", list_usage,
        "Gateway usage per API key, deployment and day (admins: all; users: their own)",
        "usage", query=UsageQuery, responses={200: UsageList}, errors=(422,),
    ),
]  # fmt: skip
