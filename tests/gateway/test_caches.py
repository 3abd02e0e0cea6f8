"""The gateway's hot-path caches under concurrency, counted at the database."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
from sqlalchemy import event

from controller import appkeys
from controller.gateway import GATEWAY
from tests.gateway.conftest import MODEL, Stack

CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_expired_entries_cost_one_query_however_many_requests_wait(stack: Stack) -> None:
    app = stack.ctl.app
    queries: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            return
        if "api_keys.key_hash" in statement:
            queries["auth"] += 1
        elif "LEFT OUTER JOIN workers" in statement and "deployments.name" in statement:
            queries["route"] += 1

    engine = app[appkeys.DATABASE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        # Both caches empty, as when their entries expire while requests are in flight.
        app[appkeys.AUTH].invalidate()
        app[GATEWAY].routes.invalidate()
        headers = {"Authorization": f"Bearer {stack.key}"}
        async with aiohttp.ClientSession() as http:

            async def call() -> int:
                async with http.post(
                    stack.base_url + "/chat/completions", json=CHAT, headers=headers
                ) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(call() for _ in range(24)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statuses == [200] * 24
    assert queries == {"auth": 1, "route": 1}


async def test_a_route_loaded_across_an_invalidation_is_not_kept(stack: Stack) -> None:
    routes = stack.ctl.app[GATEWAY].routes
    loads = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal loads
        if "LEFT OUTER JOIN workers" in statement and "deployments.name" in statement:
            loads += 1

    engine = stack.ctl.app[appkeys.DATABASE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        routes.invalidate()
        loading = asyncio.create_task(routes.lookup(MODEL))
        await asyncio.sleep(0)  # the query is on its way
        routes.invalidate()  # e.g. a status report committed meanwhile
        assert (await loading) is not None
        assert (await routes.lookup(MODEL)) is not None  # loaded again, not the old answer
        assert (await routes.lookup(MODEL)) is not None  # now cached
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert loads == 2


async def test_a_lookup_after_an_invalidation_never_joins_an_older_load(stack: Stack) -> None:
    routes = stack.ctl.app[GATEWAY].routes
    loads = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal loads
        if "LEFT OUTER JOIN workers" in statement and "deployments.name" in statement:
            loads += 1

    engine = stack.ctl.app[appkeys.DATABASE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        routes.invalidate()
        loading = asyncio.create_task(routes.lookup(MODEL))
        await asyncio.sleep(0)  # the query is on its way
        routes.invalidate()  # e.g. an instance committed as draining meanwhile
        # Not the answer of the load in flight: it may have read the old state.
        assert (await routes.lookup(MODEL)) is not None
        assert (await loading) is not None
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert loads == 2
