"""``lmstack``: the command-line client (a fuller CLI comes with the operations work)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit("lmstack: the CLI is not available yet; use the REST API (see README.md)")
