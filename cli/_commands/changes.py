"""``lmstack deployments scale|update|stop|start``: change a running deployment.

Each is one call of the REST API (``PATCH /api/deployments/{id}``, ``POST
.../stop``, ``POST .../start``) and prints the deployment it answers with. The
controller does the work afterwards (placing, draining, rolling), so a command
returns before the instances have changed; ``deployments get`` shows them.

``update`` sends the *whole* new config (the API replaces it): the current one
is read first and ``--config KEY=VALUE`` / ``--unset KEY`` are applied to it, so
the keys not named stay as they are.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli._client import ApiClient
from cli._commands._context import Context, resolve, say
from cli._commands.deployments import parse_config, replicas
from cli._errors import UsageError
from cli._output import Row


def replica_count(text: str) -> int:
    """A replica count on the command line: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _deployment_path(client: ApiClient, ref: str) -> str:
    return f"/api/deployments/{resolve(client, 'deployments', ref, 'name')}"


def _said(ctx: Context, body: Row, verb: str) -> int:
    """``<verb> deployment NAME: STATUS, READY/DESIRED replicas ready``."""
    return ctx.show(
        body,
        lambda: say(
            f"{verb} deployment {body['name']}: {body['status']}, {replicas(body)} replicas ready"
        ),
    )


def deployments_scale(ctx: Context) -> int:
    client = ctx.client()
    path = _deployment_path(client, ctx.args.ref)
    return _said(ctx, client.patch(path, {"replicas": ctx.args.replicas}), "scaled")


def deployments_update(ctx: Context) -> int:
    args = ctx.args
    if not (args.config or args.config_json or args.unset or args.model or args.image):
        raise UsageError(
            "nothing to update: pass --config, --config-json, --unset, --model or --image"
        )
    client = ctx.client()
    path = _deployment_path(client, args.ref)
    body: dict[str, Any] = {}
    if args.model:
        body["model"] = args.model
    if args.config or args.config_json or args.unset:
        body["config"] = merged_config(client.get(path), args)
        if args.image:
            body["config"]["image"] = args.image
    elif args.image:
        body["image"] = args.image
    return _said(ctx, client.patch(path, body), "updated")


def merged_config(current: Row, args: argparse.Namespace) -> dict[str, Any]:
    """``current``'s config less the ``--unset`` keys, with the given settings applied."""
    config = dict(current.get("config") or {})
    for key in args.unset:
        if key not in config:
            raise UsageError(f"--unset {key}: the deployment's config has no key {key!r}")
        del config[key]
    config.update(parse_config(args.config, args.config_json))
    return config


def deployments_stop(ctx: Context) -> int:
    client = ctx.client()
    path = _deployment_path(client, ctx.args.ref)
    return _said(ctx, client.post(f"{path}/stop", None), "stopped")


def deployments_start(ctx: Context) -> int:
    client = ctx.client()
    path = _deployment_path(client, ctx.args.ref)
    return _said(ctx, client.post(f"{path}/start", None), "started")
