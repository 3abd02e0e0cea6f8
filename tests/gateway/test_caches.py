"""The gateway's hot-path caches under concurrency, counted at the database."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from sqlalchemy import event

from controller import appkeys
from controller.gateway import GATEWAY
from controller.gateway.routes import Route, RouteTable
from tests.gateway.conftest import MODEL, Stack

CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@contextmanager
def queries(stack: Stack) -> Iterator[Counter[str]]:
    """The SELECTs run while inside, by kind: ``auth`` (an API key's lookup)
    and ``route`` (the route table's load)."""
    counted: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            return
        if "api_keys.key_hash" in statement:
            counted["auth"] += 1
        elif "LEFT OUTER JOIN workers" in statement and "deployments.name" in statement:
            counted["route"] += 1

    engine = stack.ctl.app[appkeys.DATABASE].engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def load_across_an_invalidation(routes: RouteTable) -> asyncio.Task[Route | None]:
    """A lookup of ``MODEL`` whose query is on its way when the cache is
    invalidated again (e.g. a status report or a drain committed meanwhile)."""
    routes.invalidate()
    loading = asyncio.create_task(routes.lookup(MODEL))
    await asyncio.sleep(0)  # the query is on its way
    routes.invalidate()
    return loading


async def test_expired_entries_cost_one_query_however_many_requests_wait(stack: Stack) -> None:
    app = stack.ctl.app
    with queries(stack) as counted:
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
    assert statuses == [200] * 24
    assert counted == {"auth": 1, "route": 1}


async def test_a_route_loaded_across_an_invalidation_is_not_kept(stack: Stack) -> None:
    routes = stack.ctl.app[GATEWAY].routes
    with queries(stack) as counted:
        loading = await load_across_an_invalidation(routes)
        assert (await loading) is not None
        assert (await routes.lookup(MODEL)) is not None  # loaded again, not the old answer
        assert (await routes.lookup(MODEL)) is not None  # now cached
    assert counted["route"] == 2


async def test_a_lookup_after_an_invalidation_never_joins_an_older_load(stack: Stack) -> None:
    routes = stack.ctl.app[GATEWAY].routes
    with queries(stack) as counted:
        loading = await load_across_an_invalidation(routes)
        # Not the answer of the load in flight: it may have read the old state.
        assert (await routes.lookup(MODEL)) is not None
        assert (await loading) is not None
    assert counted["route"] == 2
