"""``lmstack keys``: list, create and revoke API keys for the OpenAI-compatible gateway."""

from __future__ import annotations

from cli._commands._context import Context, resolve, say
from cli._errors import EXIT_OK
from cli._output import Column, col, print_json, print_table

KEY_COLUMNS = [
    col("ID"),
    col("Name"),
    Column("Key", lambda row: f"{row.get('prefix', '')}...{row.get('hint', '')}"),
    col("User", "user_id"),
    col("Created", "created_at"),
    col("Last used", "last_used"),
]


def keys_list(ctx: Context) -> int:
    body = ctx.client().get("/api/api-keys")
    if ctx.as_json:
        print_json(body)
    else:
        print_table(body["items"], KEY_COLUMNS)
    return EXIT_OK


def keys_create(ctx: Context) -> int:
    created = ctx.client().post("/api/api-keys", {"name": ctx.args.name})
    if ctx.as_json:
        print_json(created)
    else:
        say(f"created API key {created['name']} (id {created['id']}):\n\n    {created['key']}\n")
        say("Store it now: it is not shown again.")
    return EXIT_OK


def keys_delete(ctx: Context) -> int:
    client = ctx.client()
    client.delete(f"/api/api-keys/{resolve(client, 'api-keys', ctx.args.ref, 'name')}")
    if not ctx.as_json:
        say(f"deleted API key {ctx.args.ref}")
    return EXIT_OK
