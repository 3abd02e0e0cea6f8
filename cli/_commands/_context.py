"""What every handler shares: the parsed ``Context`` and small helpers.

``Context`` turns the global options into a controller URL and a signed-in
``ApiClient`` and prints an answer (``Context.show``: the API's JSON under
``--json``, else text for people); ``resolve`` accepts an id or a unique name
wherever a command takes a reference; ``show_table`` and ``delete_named`` are the
``list`` and ``delete`` of every collection; ``read_secret`` reads a password from a
terminal or stdin.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cli import _config
from cli._client import ApiClient
from cli._errors import EXIT_OK, ApiError, AuthError, UsageError
from cli._output import Column, print_json, print_table

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

    def show(self, body: Any, human: Callable[[], None]) -> int:
        """``body`` as JSON under ``--json``, else what ``human`` prints; the exit code."""
        if self.as_json:
            print_json(body)
        else:
            human()
        return EXIT_OK


Handler = Callable[[Context], int]


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


def show_table(ctx: Context, path: str, columns: Sequence[Column]) -> int:
    """A collection's items as a table."""
    body = ctx.client().get(path)
    return ctx.show(body, lambda: print_table(body["items"], columns))


def delete_named(ctx: Context, collection: str, key: str, noun: str) -> int:
    """Delete ``ctx.args.ref`` (an id, or the ``key`` of one item) from ``collection``."""
    client = ctx.client()
    client.delete(f"/api/{collection}/{resolve(client, collection, ctx.args.ref, key)}")
    if not ctx.as_json:
        say(f"deleted {noun} {ctx.args.ref}")
    return EXIT_OK


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
