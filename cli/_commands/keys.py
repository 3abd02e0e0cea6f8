"""``lmstack keys``: list, create, limit and revoke API keys for the OpenAI-compatible
gateway."""

from __future__ import annotations

from typing import Any

from cli._commands._context import Context, delete_named, resolve, say, show_table
from cli._commands.limits import LIMIT_COLUMNS, given_limits, merged_limits, say_limits
from cli._output import Column, Row, col

KEY_COLUMNS = [
    col("ID"),
    col("Name"),
    Column("Key", lambda row: f"{row.get('prefix', '')}...{row.get('hint', '')}"),
    col("User", "user_id"),
    col("Created", "created_at"),
    col("Last used", "last_used"),
    *LIMIT_COLUMNS,
]


def keys_list(ctx: Context) -> int:
    return show_table(ctx, "/api/api-keys", KEY_COLUMNS)


def keys_create(ctx: Context) -> int:
    body: dict[str, Any] = {"name": ctx.args.name}
    limits = {k: v for k, v in given_limits(ctx.args).items() if v is not None}
    if limits:
        body["limits"] = limits
    created = ctx.client().post("/api/api-keys", body)
    return ctx.show(created, lambda: _say_created(created))


def _say_created(created: Row) -> None:
    say(f"created API key {created['name']} (id {created['id']}):\n\n    {created['key']}\n")
    say("Store it now: it is not shown again.")


def keys_limits(ctx: Context) -> int:
    client = ctx.client()
    key_id = resolve(client, "api-keys", ctx.args.ref, "name")
    current = client.get(f"/api/api-keys/{key_id}")
    limits = merged_limits(current, ctx.args)
    updated = client.patch(f"/api/api-keys/{key_id}", {"limits": limits})
    return say_limits(ctx, f"API key {updated['name']}", updated)


def keys_delete(ctx: Context) -> int:
    return delete_named(ctx, "api-keys", "name", "API key")
