"""The CLI is a REST client: it imports neither daemon."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
from cli._parser import build_parser
build_parser().parse_args(["deployments", "list"])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_cli_imports_neither_daemon() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert "cli" in loaded
    assert not loaded & {"controller", "agent"}
