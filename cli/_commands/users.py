"""``lmstack users``: list, create, update and delete users (admins only)."""

from __future__ import annotations

from typing import Any

from cli._commands._context import Context, read_secret, resolve, say
from cli._errors import EXIT_OK, UsageError
from cli._output import col, print_json, print_table

USER_COLUMNS = [
    col("ID"),
    col("Username"),
    col("Email"),
    col("Admin", "is_admin"),
    col("Created", "created_at"),
]


def users_list(ctx: Context) -> int:
    body = ctx.client().get("/api/users")
    if ctx.as_json:
        print_json(body)
    else:
        print_table(body["items"], USER_COLUMNS)
    return EXIT_OK


def users_create(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    password = read_secret(f"Password for {args.username}: ", args.password_stdin, confirm=True)
    body = {"username": args.username, "password": password, "is_admin": args.admin}
    if args.email:
        body["email"] = args.email
    created = client.post("/api/users", body)
    if ctx.as_json:
        print_json(created)
    else:
        say(f"created user {created['username']} (id {created['id']})")
    return EXIT_OK


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
    if ctx.as_json:
        print_json(updated)
    else:
        say(f"updated user {updated['username']}")
    return EXIT_OK


def users_delete(ctx: Context) -> int:
    client = ctx.client()
    client.delete(f"/api/users/{resolve(client, 'users', ctx.args.ref, 'username')}")
    if not ctx.as_json:
        say(f"deleted user {ctx.args.ref}")
    return EXIT_OK
