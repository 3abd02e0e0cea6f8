"""``lmstack deployments``: list, get, create, delete and follow the logs of deployments.

A deployment is ``replicas`` instances (containers); the list shows them as
``ready/desired`` and ``get`` lists each instance. Changing a deployment
(scale, update, stop, start) lives in ``cli._commands.changes``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from cli._client import ApiClient
from cli._commands._context import Context, delete_named, resolve, say
from cli._errors import EXIT_OK, UsageError
from cli._output import Column, Row, col, print_fields, print_json, print_table


def replicas(row: Row) -> str:
    """``ready/desired``, e.g. ``2/3``."""
    return f"{row.get('ready_replicas', 0)}/{row.get('replicas', '?')}"


DEPLOYMENT_COLUMNS = [
    col("ID"),
    col("Name"),
    col("Model"),
    col("Backend"),
    col("Status"),
    Column("Replicas", replicas),
    col("Worker", "worker_name"),
    col("Port"),
    col("Created", "created_at"),
]

# ``deployments get``: the table's columns and what only one deployment shows.
_FIELDS = [
    *DEPLOYMENT_COLUMNS[:5],
    col("Message", "status_message"),
    *DEPLOYMENT_COLUMNS[5:],
    col("Stopped"),
    col("Spec version", "spec_version"),
    col("Rollout error", "rollout_error"),
    col("GPUs", "gpu_indices"),
    col("Container", "container_id"),
    col("Updated", "updated_at"),
    col("Config"),
]

SHORT_ID = 8


MESSAGE_WIDTH = 60


def _instance_status(row: Row) -> str:
    return str(row.get("status", "")) + (" (draining)" if row.get("draining") else "")


def _first_line(row: Row) -> str:
    """The status message's first line (it may carry the engine's last log lines)."""
    lines = str(row.get("status_message") or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 3] + "..."


INSTANCE_COLUMNS = [
    Column("ID", lambda row: str(row.get("id", ""))[:SHORT_ID]),
    Column("Worker", lambda row: row.get("worker_name") or (row.get("worker_id") or "")[:SHORT_ID]),
    Column("Status", _instance_status),
    col("Restarts"),
    col("Last exit", "last_exit_code"),
    col("Port"),
    col("GPUs", "gpu_indices"),
    col("Spec", "spec_version"),
    col("Started", "started_at"),
    Column("Message", _first_line),
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
    return ctx.show(
        body, lambda: print_table(_with_worker_names(client, body["items"]), DEPLOYMENT_COLUMNS)
    )


def deployments_get(ctx: Context) -> int:
    client = ctx.client()
    body = client.get(f"/api/deployments/{resolve(client, 'deployments', ctx.args.ref, 'name')}")
    return ctx.show(body, lambda: print_deployment(_with_worker_names(client, [body])[0]))


def print_deployment(body: Row) -> None:
    """The deployment's fields, then a table of its instances."""
    print_fields(body, _FIELDS)
    say("\nInstances:")
    print_table(body.get("instances") or [], INSTANCE_COLUMNS)


def deployments_create(ctx: Context) -> int:
    client = ctx.client()
    args = ctx.args
    body: dict[str, Any] = {
        "name": args.name,
        "model": args.model,
        "backend": args.backend,
        "replicas": args.replicas,
        "config": parse_config(args.config, args.config_json),
    }
    if args.worker:
        body["worker_id"] = resolve(client, "workers", args.worker, "name")
    created = client.post("/api/deployments", body)
    return ctx.show(
        created,
        lambda: say(
            f"created deployment {created['name']} (id {created['id']}, {created['status']})"
        ),
    )


def deployments_delete(ctx: Context) -> int:
    return delete_named(ctx, "deployments", "name", "deployment")


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
