"""The argument parser and one handler per subcommand.

A handler takes the parsed ``Context`` and returns the exit code; failures
raise ``CliError`` (see ``_errors``) and ``_main`` turns them into a message
on stderr and the matching exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.cli import _config
from controller.cli._client import ApiClient
from controller.cli._errors import EXIT_OK, ApiError, AuthError, UsageError
from controller.cli._output import (
    Column,
    Row,
    col,
    print_fields,
    print_json,
    print_table,
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_LIST_LIMIT = 1000


@dataclass
class Context:
    args: argparse.Namespace

    @property
    def as_json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def url(self) -> str:
        return _config.effective_url(getattr(self.args, "controller", None))

    def client(self, *, signed_in: bool = True) -> ApiClient:
        url = self.url
        token = _config.effective_token(url)
        if signed_in and not token:
            hint = "run `lmstack login` or set LMSTACK_TOKEN"
            raise AuthError(401, f"not signed in to {url}: {hint}")
        return ApiClient(url, token)


Handler = Callable[[Context], int]


# ---------------------------------------------------------------- helpers


def say(message: str) -> None:
    sys.stdout.write(message + "\n")


def resolve(client: ApiClient, collection: str, ref: str, key: str) -> str:
    """An id from an id or a unique name (``key`` is the name field)."""
    if _UUID.match(ref):
        return ref
    params = {"limit": _LIST_LIMIT} if collection == "deployments" else None
    body = client.get(f"/api/{collection}", params)
    matches = [item for item in body["items"] if item.get(key) == ref]
    noun = collection.rstrip("s").replace("-", " ")
    if not matches:
        raise ApiError(404, f"no {noun} with id or {key} {ref!r}")
    if len(matches) > 1:
        raise UsageError(f"{len(matches)} {collection} have the {key} {ref!r}; use the id")
    return str(matches[0]["id"])


def read_secret(prompt: str, from_stdin: bool, *, confirm: bool = False) -> str:
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        secret = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != secret:
            raise UsageError("the passwords do not match")
    else:
        raise UsageError("no terminal to prompt on; pass --password-stdin and pipe the password")
    if not secret:
        raise UsageError("empty password")
    return secret


def parse_config(pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    """``--config-json`` first, then each ``KEY=VALUE`` (VALUE parsed as JSON if it can be)."""
    config: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except ValueError as exc:
            raise UsageError(f"--config-json: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError("--config-json must be a JSON object")
        config.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--config {pair!r}: expected KEY=VALUE")
        try:
            config[key] = json.loads(value)
        except ValueError:
            config[key] = value
    return config


# ---------------------------------------------------------------- auth


def login(ctx: Context) -> int:
    url = ctx.url
    password = read_secret(f"Password for {ctx.args.username}@{url}: ", ctx.args.password_stdin)
    body = ctx.client(signed_in=False).post(
        "/api/auth/login", {"username": ctx.args.username, "password": password}
    )
    path = _config.save(_config.StoredLogin(url, body["access_token"], ctx.args.username))
    if ctx.as_json:
        print_json({"url": url, "username": ctx.args.username, "config": str(path)})
    else:
        say(f"signed in to {url} as {ctx.args.username}; token stored in {path}")
    return EXIT_OK


def logout(ctx: Context) -> int:
    stored = _config.load()
    if stored.token:
        _config.save(_config.StoredLogin(stored.url, "", stored.username))
    say(f"signed out; no token is stored in {_config.config_path()}")
    return EXIT_OK


def whoami(ctx: Context) -> int:
    user = ctx.client().get("/api/auth/me")
    if ctx.as_json:
        print_json(user)
    else:
        print_fields(user, USER_COLUMNS)
    return EXIT_OK


# ---------------------------------------------------------------- deployments

DEPLOYMENT_COLUMNS = [
    col("ID"),
    col("Name"),
    col("Model"),
    col("Backend"),
    col("Status"),
    col("Worker", "worker_name"),
    col("Port"),
    col("Created", "created_at"),
]


def _with_worker_names(client: ApiClient, rows: list[Row]) -> list[Row]:
    names = {w["id"]: w["name"] for w in client.get("/api/workers")["items"]}
    return [{**row, "worker_name": names.get(row["worker_id"], row["worker_id"])} for row in rows]


def deployments_list(ctx: Context) -> int:
    client = ctx.client()
    params = {"limit": ctx.args.limit, "status": ctx.args.status}
    if ctx.args.worker:
        params["worker_id"] = resolve(client, "workers", ctx.args.worker, "name")
    body = client.get("/api/deployments", params)
    if ctx.as_json:
        print_json(body)
    else:
        print_table(_with_worker_names(client, body["items"]), DEPLOYMENT_COLUMNS)
    return EXIT_OK


def deployments_get(ctx: Context) -> int:
    client = ctx.client()
    body = client.get(f"/api/deployments/{resolve(client, 'deployments', ctx.args.ref, 'name')}")
    if ctx.as_json:
        print_json(body)
        return EXIT_OK
    row = _with_worker_names(client, [body])[0]
    print_fields(
        row,
        [
            *DEPLOYMENT_COLUMNS[:5],
            col("Message", "status_message"),
            *DEPLOYMENT_COLUMNS[5:],
            col("GPUs", "gpu_indices"),
            col("Container", "container_id"),
            col("Updated", "updated_at"),
            col("Config"),
        ],
    )
    return EXIT_OK


def deployments_create(ctx: Context) -> int:
    client = ctx.client()
    args = ctx.args
    body: dict[str, Any] = {
        "name": args.name,
        "model": args.model,
        "backend": args.backend,
        "config": parse_config(args.config, args.config_json),
    }
    if args.worker:
        body["worker_id"] = resolve(client, "workers", args.worker, "name")
    created = client.post("/api/deployments", body)
    if ctx.as_json:
        print_json(created)
    else:
        say(f"created deployment {created['name']} (id {created['id']}, {created['status']})")
    return EXIT_OK


def deployments_delete(ctx: Context) -> int:
    client = ctx.client()
    deployment_id = resolve(client, "deployments", ctx.args.ref, "name")
    client.delete(f"/api/deployments/{deployment_id}")
    if not ctx.as_json:
        say(f"deleted deployment {ctx.args.ref}")
    return EXIT_OK


def deployments_logs(ctx: Context) -> int:
    client = ctx.client()
    path = f"/api/deployments/{resolve(client, 'deployments', ctx.args.ref, 'name')}/logs"
    lines = _log_lines(client, path, ctx.args.lines)
    if ctx.as_json and not ctx.args.follow:
        print_json({"logs": "\n".join(lines)})
        return EXIT_OK
    _write_lines(lines)
    if ctx.args.follow:
        _follow(client, path, lines, ctx.args.interval)
    return EXIT_OK


def _log_lines(client: ApiClient, path: str, count: int) -> list[str]:
    text = str(client.get(path, {"lines": count})["logs"])
    return text.splitlines()


def _write_lines(lines: list[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _follow(client: ApiClient, path: str, seen: list[str], interval: float) -> None:
    """Poll the logs and print what is new, until Ctrl-C."""
    window = 1000
    try:
        while True:
            time.sleep(interval)
            current = _log_lines(client, path, window)
            _write_lines(new_lines(seen, current))
            seen = current
    except KeyboardInterrupt:
        return


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The tail of ``current`` after its longest overlap with the end of ``previous``."""
    for overlap in range(min(len(previous), len(current)), 0, -1):
        if previous[-overlap:] == current[:overlap]:
            return current[overlap:]
    return current


# ---------------------------------------------------------------- workers


def _gpus(row: Row) -> str:
    info = row.get("gpu_info") or {}
    devices = info.get("devices") or []
    if not devices:
        return "none"
    names = sorted({d.get("name", "?") for d in devices})
    return f"{len(devices)}x " + "/".join(names) + (" (simulated)" if info.get("simulated") else "")


WORKER_COLUMNS = [
    col("ID"),
    col("Name"),
    col("Status"),
    col("Address", "advertise_address"),
    Column("GPUs", _gpus),
    col("Agent", "agent_version"),
    col("Last heartbeat", "last_heartbeat"),
]
GPU_COLUMNS = [
    col("Index"),
    col("Name"),
    col("Memory MiB", "memory"),
    col("Used MiB", "memory_used"),
    col("Util %", "utilization"),
    col("Temp C", "temperature"),
]


def workers_list(ctx: Context) -> int:
    body = ctx.client().get("/api/workers")
    if ctx.as_json:
        print_json(body)
    else:
        print_table(body["items"], WORKER_COLUMNS)
    return EXIT_OK


def workers_get(ctx: Context) -> int:
    client = ctx.client()
    body = client.get(f"/api/workers/{resolve(client, 'workers', ctx.args.ref, 'name')}")
    if ctx.as_json:
        print_json(body)
        return EXIT_OK
    print_fields(body, [*WORKER_COLUMNS, col("Runtime error", "runtime_error")])
    say("\nGPUs:")
    print_table((body.get("gpu_info") or {}).get("devices") or [], GPU_COLUMNS)
    say("\nDeployments:")
    columns = [c for c in DEPLOYMENT_COLUMNS if c.header != "Worker"]
    print_table(body.get("deployments") or [], columns)
    return EXIT_OK


# ---------------------------------------------------------------- api keys

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


# ---------------------------------------------------------------- users

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
