"""The ``lmstack`` argument parser: every leaf command sets ``handler``."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from cli import _commands as cmd
from shared.engines import BACKEND_NAMES, DEFAULT_BACKEND

DESCRIPTION = "Manage an LMStack controller over its REST API."
EPILOG = """\
controller and credentials:
  --controller URL, else LMSTACK_URL, else the URL saved by `lmstack login`,
  else http://127.0.0.1:8088. LMSTACK_TOKEN (a login token or an lmsk_ API key)
  overrides the token saved by `lmstack login` in
  $XDG_CONFIG_HOME/lmstack/config.json (default ~/.config/lmstack, mode 0600).

exit codes:
  0 success   1 the request failed   2 usage error
  3 not signed in or not allowed (401/403)   4 controller unreachable
"""


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--controller",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="controller REST URL (env LMSTACK_URL)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of a table",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="lmstack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    _auth(groups, common)
    _deployments(groups, common)
    _workers(groups, common)
    _keys(groups, common)
    _users(groups, common)
    return parser


# How a user is referred to on the command line.
BY_USERNAME = "id or username"

# Only a type: the class is not subscriptable at run time.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _leaf(
    subs: Subparsers,
    name: str,
    handler: cmd.Handler,
    common: argparse.ArgumentParser,
    help: str,
    *,
    ref: str | None = None,
    ref_help: str = "id or name",
) -> argparse.ArgumentParser:
    """A command; ``ref`` names the metavar of its positional reference (``args.ref``)."""
    leaf = subs.add_parser(name, help=help, description=help, parents=[common])
    leaf.set_defaults(handler=handler)
    if ref is not None:
        leaf.add_argument("ref", metavar=ref, help=ref_help)
    return leaf


def _group(groups: Subparsers, name: str, help: str) -> Subparsers:
    parser = groups.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )


def _auth(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    login = _leaf(groups, "login", cmd.login, common, "sign in and store a token")
    login.add_argument("--username", "-u", required=True)
    _password_stdin(login)
    _leaf(groups, "logout", cmd.logout, common, "forget the stored token")
    _leaf(groups, "whoami", cmd.whoami, common, "show the signed-in user")


def _deployments(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    subs = _group(groups, "deployments", "list, inspect, create, change and delete deployments")
    listing = _leaf(subs, "list", cmd.deployments_list, common, "list deployments")
    listing.add_argument("--status", help="only deployments in this status")
    listing.add_argument("--worker", metavar="WORKER", help="only this worker's (id or name)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    _leaf(subs, "get", cmd.deployments_get, common, "show one deployment", ref="DEPLOYMENT")
    create = _leaf(subs, "create", cmd.deployments_create, common, "create a deployment")
    create.add_argument("name", metavar="NAME", help="lowercase, [a-z0-9][a-z0-9._-]*")
    create.add_argument("--model", "-m", required=True, help="e.g. Qwen/Qwen2.5-0.5B-Instruct")
    create.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES)
    create.add_argument(
        "--worker", metavar="WORKER", help="id or name: every replica there (default: spread)"
    )
    create.add_argument(
        "--replicas", type=cmd.replica_count, default=1, metavar="N", help="instances (default 1)"
    )
    _config_flags(create)
    _leaf(subs, "delete", cmd.deployments_delete, common, "delete a deployment", ref="DEPLOYMENT")
    _changes(subs, common)
    about = "print a deployment's engine logs"
    logs = _leaf(subs, "logs", cmd.deployments_logs, common, about, ref="DEPLOYMENT")
    logs.add_argument("--lines", "-n", type=int, default=100, help="last N lines (default 100)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "--interval", type=float, default=2.0, help="seconds between polls with --follow"
    )


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="engine setting, VALUE read as JSON when it parses (repeatable)",
    )
    parser.add_argument("--config-json", metavar="JSON", help="engine settings as a JSON object")


def _changes(subs: Subparsers, common: argparse.ArgumentParser) -> None:
    about = "set the number of replicas (down drains first; 0 keeps the deployment)"
    scale = _leaf(subs, "scale", cmd.deployments_scale, common, about, ref="DEPLOYMENT")
    scale.add_argument("replicas", metavar="N", type=cmd.replica_count, help="replicas, 0 or more")
    about = (
        "change the config, model or image: a rolling update, one instance at a time "
        "(the config keys not named are kept)"
    )
    update = _leaf(subs, "update", cmd.deployments_update, common, about, ref="DEPLOYMENT")
    _config_flags(update)
    update.add_argument(
        "--unset", metavar="KEY", action="append", default=[], help="drop a config key (repeatable)"
    )
    update.add_argument("--model", "-m", help="a new model")
    update.add_argument("--image", help="a new engine image (config.image)")
    about = "stop every instance and release its GPUs (the deployment is kept)"
    _leaf(subs, "stop", cmd.deployments_stop, common, about, ref="DEPLOYMENT")
    about = "start a stopped deployment again (its replicas are placed anew)"
    _leaf(subs, "start", cmd.deployments_start, common, about, ref="DEPLOYMENT")


def _workers(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    subs = _group(groups, "workers", "list and inspect GPU hosts")
    _leaf(subs, "list", cmd.workers_list, common, "list workers")
    about = "show one worker, its GPUs and deployments"
    _leaf(subs, "get", cmd.workers_get, common, about, ref="WORKER")


def _keys(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    subs = _group(groups, "keys", "manage API keys for the OpenAI-compatible gateway")
    _leaf(subs, "list", cmd.keys_list, common, "list API keys")
    create = _leaf(subs, "create", cmd.keys_create, common, "create a key (shown once)")
    create.add_argument("name", metavar="NAME")
    cmd.add_limit_flags(create, clear=False)
    about = "change a key's limits (the others are kept)"
    limits = _leaf(subs, "limits", cmd.keys_limits, common, about, ref="KEY")
    cmd.add_limit_flags(limits, clear=True)
    _leaf(subs, "delete", cmd.keys_delete, common, "delete (revoke) a key", ref="KEY")


def _users(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    subs = _group(groups, "users", "manage users (admins only)")
    _leaf(subs, "list", cmd.users_list, common, "list users")
    create = _leaf(subs, "create", cmd.users_create, common, "create a user")
    create.add_argument("username", metavar="USERNAME")
    create.add_argument("--email")
    create.add_argument("--admin", action="store_true", help="make the user an admin")
    _password_stdin(create)
    about = "change email, role or password"
    update = _leaf(
        subs, "update", cmd.users_update, common, about, ref="USER", ref_help=BY_USERNAME
    )
    update.add_argument("--email", help='new address ("" clears it)')
    update.add_argument(
        "--admin", action=argparse.BooleanOptionalAction, help="grant or revoke admin"
    )
    update.add_argument("--password", action="store_true", help="prompt for a new password")
    _password_stdin(update)
    about = "change a user's limits, which hold for all their keys (the others are kept)"
    limits = _leaf(
        subs, "limits", cmd.users_limits, common, about, ref="USER", ref_help=BY_USERNAME
    )
    cmd.add_limit_flags(limits, clear=True)
    about = "delete a user and their keys"
    _leaf(subs, "delete", cmd.users_delete, common, about, ref="USER", ref_help=BY_USERNAME)
