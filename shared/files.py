"""Small files made once and read ever after (secrets, identities)."""

from __future__ import annotations

import os
from pathlib import Path


def read_or_create(path: Path, value: str) -> str:
    """The stripped text of ``path``; when the file is absent, ``value`` is
    written there first (exclusively, mode 0600, fsynced), so two processes
    starting at once agree on one value. ``""`` when the file exists but is
    empty (the caller says what to do about it); ``OSError`` otherwise."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value
