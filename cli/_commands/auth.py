"""``lmstack login``, ``logout`` and ``whoami``: the stored token and who it belongs to."""

from __future__ import annotations

from cli import _config
from cli._commands._context import Context, read_secret, say
from cli._commands.users import USER_COLUMNS
from cli._errors import EXIT_OK
from cli._output import print_fields


def login(ctx: Context) -> int:
    url = ctx.url
    password = read_secret(f"Password for {ctx.args.username}@{url}: ", ctx.args.password_stdin)
    body = ctx.client(signed_in=False).post(
        "/api/auth/login", {"username": ctx.args.username, "password": password}
    )
    path = _config.save(_config.StoredLogin(url, body["access_token"], ctx.args.username))
    return ctx.show(
        {"url": url, "username": ctx.args.username, "config": str(path)},
        lambda: say(f"signed in to {url} as {ctx.args.username}; token stored in {path}"),
    )


def logout(ctx: Context) -> int:
    stored = _config.load()
    if stored.token:
        _config.save(_config.StoredLogin(stored.url, "", stored.username))
    say(f"signed out; no token is stored in {_config.config_path()}")
    return EXIT_OK


def whoami(ctx: Context) -> int:
    user = ctx.client().get("/api/auth/me")
    return ctx.show(user, lambda: print_fields(user, USER_COLUMNS))
