"""The worker id file: the agent's identity across restarts.

Guarantees: the worker id is written to ``<state_dir>/worker_id`` atomically
(temp file, fsync, rename), so a reader sees the old id or the new one, never a
torn file. Reading never raises: a missing or unreadable file means "join as a
new worker", and a failed write is logged, not raised (the agent keeps serving).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("lmstack.agent.session")

WORKER_ID_FILE = "worker_id"


class WorkerIdFile:
    """``<state_dir>/worker_id``: read once at start, rewritten on every new id."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / WORKER_ID_FILE

    def read(self) -> str:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            logger.warning(
                "cannot read worker id from %s: %s; joining as a new worker", self.path, exc
            )
            return ""

    def write(self, worker_id: str) -> None:
        try:
            _write_atomically(self.path, worker_id + "\n")
        except OSError as exc:
            logger.error(
                "cannot persist worker id in %s (%s): a restart will join as a new worker",
                self.path,
                exc,
            )


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` so readers see the old content or the new, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
