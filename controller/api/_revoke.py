"""Deleting a row that grants access (a user, an API key), shared by their handlers.

The authenticator caches what tokens and keys resolve to; the delete is committed
first and the cache dropped after, so the row's access ends with the ``204``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from controller import appkeys
from controller.store import Base


async def delete_granting_row(
    request: web.Request, find: Callable[[AsyncSession], Awaitable[Base]]
) -> web.Response:
    """Delete the row ``find`` returns (it raises when there is none to delete)."""
    async with request.app[appkeys.DATABASE].session() as session:
        row = await find(session)
        await session.delete(row)
        await session.commit()
    request.app[appkeys.AUTH].invalidate()
    return web.Response(status=204)
