"""One handler per subcommand, one module per resource.

A handler takes the parsed ``Context`` and returns the exit code; failures
raise ``CliError`` (see ``cli._errors``) and ``cli._main`` turns them into a
message on stderr and the matching exit code.

* ``_context``    ``Context`` and the helpers every handler shares
* ``auth``        login, logout, whoami
* ``deployments`` list, get, create, delete, logs
* ``changes``     deployments scale, update, stop, start
* ``workers``     list, get
* ``keys``        API keys: list, create, limits, delete
* ``users``       list, create, update, limits, delete
* ``limits``      the limit flags and columns keys and users share
"""

from __future__ import annotations

from cli._commands._context import Context, Handler
from cli._commands.auth import login, logout, whoami
from cli._commands.changes import (
    deployments_scale,
    deployments_start,
    deployments_stop,
    deployments_update,
    replica_count,
)
from cli._commands.deployments import (
    deployments_create,
    deployments_delete,
    deployments_get,
    deployments_list,
    deployments_logs,
    new_lines,
)
from cli._commands.keys import keys_create, keys_delete, keys_limits, keys_list
from cli._commands.limits import add_limit_flags
from cli._commands.users import (
    users_create,
    users_delete,
    users_limits,
    users_list,
    users_update,
)
from cli._commands.workers import workers_get, workers_list

__all__ = [
    "Context",
    "Handler",
    "add_limit_flags",
    "deployments_create",
    "deployments_delete",
    "deployments_get",
    "deployments_list",
    "deployments_logs",
    "deployments_scale",
    "deployments_start",
    "deployments_stop",
    "deployments_update",
    "keys_create",
    "keys_delete",
    "keys_limits",
    "keys_list",
    "login",
    "logout",
    "new_lines",
    "replica_count",
    "users_create",
    "users_delete",
    "users_limits",
    "users_list",
    "users_update",
    "whoami",
    "workers_get",
    "workers_list",
]
