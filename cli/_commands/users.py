"""``lmstack users``: list, create, update, limit and delete users (admins only)."""

from __future__ import annotations

from typing import Any

from cli._commands._context import Context, delete_named, read_secret, resolve, say, show_table
from cli._commands.limits import LIMIT_COLUMNS, merged_limits, say_limits
from cli._errors import UsageError
from cli._output import col

USER_COLUMNS = [
    col("ID"),
    col("Username"),
    col("Email"),
    col("Admin", "is_admin"),
    col("Created", "created_at"),
    *LIMIT_COLUMNS,
]


def users_list(ctx: Context) -> int:
    return show_table(ctx, "/api/users", USER_COLUMNS)


def users_create(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    password = read_secret(f"Password for {args.username}: ", args.password_stdin, confirm=True)
    body = {"username": args.username, "password": password, "is_admin": args.admin}
    if args.email:
        body["email"] = args.email
    created = client.post("/api/users", body)
    return ctx.show(
        created, lambda: say(f"created user {created['username']} (id {created['id']})")
    )


def users_update(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    body: dict[str, Any] = {}
    if args.email is not None:
        body["email"] = args.email or None
    if args.admin is not None:
        body["is_admin"] = args.admin
    if args.password or args.password_stdin:
        body["password"] = read_secret("New password: ", args.password_stdin, confirm=True)
    if not body:
        raise UsageError("nothing to update: pass --email, --admin/--no-admin or a password")
    user_id = resolve(client, "users", args.ref, "username")
    updated = client.patch(f"/api/users/{user_id}", body)
    return ctx.show(updated, lambda: say(f"updated user {updated['username']}"))


def users_limits(ctx: Context) -> int:
    client = ctx.client()
    user_id = resolve(client, "users", ctx.args.ref, "username")
    current = client.get(f"/api/users/{user_id}")
    updated = client.patch(f"/api/users/{user_id}", {"limits": merged_limits(current, ctx.args)})
    return say_limits(ctx, f"user {updated['username']}", updated)


def users_delete(ctx: Context) -> int:
    return delete_named(ctx, "users", "username", "user")
