"""``python -m cli``: the same as the ``lmstack`` console script."""

from __future__ import annotations

import sys

from cli import main

sys.exit(main())
