"""``lmstack``: the command-line client of the LMStack REST API.

``main`` is the console script. Everything else is private:

* ``_config``   where the controller URL and the login token come from
* ``_client``   HTTP calls, API errors translated into ``CliError``
* ``_output``   aligned tables and JSON
* ``_parser``   the argument parser
* ``_commands`` one handler per subcommand, one module per resource

Exit codes (also in ``lmstack --help``): 0 success, 1 the request failed
(the API's ``detail`` is printed), 2 usage error, 3 not signed in or not
allowed (401/403), 4 the controller cannot be reached, 130 interrupted.
"""

from __future__ import annotations

from cli._main import main

__all__ = ["main"]
