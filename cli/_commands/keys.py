"""``lmstack keys``: list, create and revoke API keys for the OpenAI-compatible gateway."""

from __future__ import annotations

from cli._commands._context import Context, delete_named, say, show_table
from cli._output import Column, Row, col

KEY_COLUMNS = [
    col("ID"),
    col("Name"),
    Column("Key", lambda row: f"{row.get('prefix', '')}...{row.get('hint', '')}"),
    col("User", "user_id"),
    col("Created", "created_at"),
    col("Last used", "last_used"),
]


def keys_list(ctx: Context) -> int:
    return show_table(ctx, "/api/api-keys", KEY_COLUMNS)


def keys_create(ctx: Context) -> int:
    created = ctx.client().post("/api/api-keys", {"name": ctx.args.name})
    return ctx.show(created, lambda: _say_created(created))


def _say_created(created: Row) -> None:
    say(f"created API key {created['name']} (id {created['id']}):\n\n    {created['key']}\n")
    say("Store it now: it is not shown again.")


def keys_delete(ctx: Context) -> int:
    return delete_named(ctx, "api-keys", "name", "API key")
