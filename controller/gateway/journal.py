"""The usage journal: an append-only log of completed gateway requests' usage.

Layout: ``<directory>/controller-id`` holds this controller's random journal id
(made once; controllers sharing a database each have their own), and
``<directory>/segment-<n>.log`` the segments, numbered upwards from 1. One
segment is open for appending; the others are closed and wait to be added to
the database by ``controller.gateway.usage``; once added, a segment stays on
disk until its newest record is ``RECENT_SECONDS`` old, so the rate windows of
the last minute can be rebuilt from it at start (``recent``).

A record is one line of tab-separated text, written by one unbuffered
``os.write`` to an ``O_APPEND`` descriptor::

    time  day  api_key_id  user_id  deployment_id  deployment_name  prompt  completion

``time`` is when the request completed, in unix seconds with milliseconds (the
fields never hold a tab or a newline: ids are UUIDs, names DNS labels). A line
of the first format (seven fields, no ``time``) still counts; it has no time,
so ``recent`` never returns it.

Guarantees:

* A record that ``append`` accepted is in the kernel's page cache when it
  returns: it survives the controller being killed (SIGKILL, OOM), and is read
  back by ``read``.
* ``seal`` fsyncs the segments ``rotate`` closed (and the directory), and
  ``close`` the open one, so a machine crash (power loss, kernel panic) loses
  at most what was appended to the open segment since the last rotation.
* A line cut short (a machine crash or a full disk mid-write) is skipped with a
  warning, never misread: only whole lines of well-formed fields count.
  After a short or failed write ``append`` refuses every record until the next
  rotation, so nothing is glued onto the cut line.
* Segment numbers only grow: ``open(after)`` starts above ``after`` (the
  database's checkpoint) and above every segment on disk.

Concurrency: ``append``, ``rotate``, ``open`` and ``close`` run on the event
loop thread (the descriptor swap happens between two appends); ``seal``,
``read`` and ``remove`` only touch closed segments and may run in a worker
thread (one at a time: the recorder's flush lock); ``recent`` reads every
segment, blocking, and is meant for the start, before records are appended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigError, StoreError
from shared.files import read_or_create

log = logging.getLogger("lmstack.gateway.journal")

# api_key_id ("" for login tokens), user_id, deployment_id, deployment_name, day
UsageKey = tuple[str, str, str, str, str]
# (unix time, api_key_id or "", user_id, prompt + completion tokens): one request.
RecentEvent = tuple[float, str, str, int]

ID_FILE = "controller-id"
# Seconds an added segment stays on disk after its newest record (the longest rate window).
RECENT_SECONDS = 60.0
_PREFIX, _SUFFIX = "segment-", ".log"
_FIELDS, _UNTIMED_FIELDS = 8, 7
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


@dataclass
class Counts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class Segment:
    """A segment's counts, and the time of its newest record (0: none has one)."""

    counts: dict[UsageKey, Counts] = field(default_factory=dict)
    newest: float = 0.0


def merge(into: dict[UsageKey, Counts], batch: dict[UsageKey, Counts]) -> None:
    for key, counts in batch.items():
        into.setdefault(key, Counts()).add(counts)


def encode(key: UsageKey, prompt_tokens: int, completion_tokens: int, at: float) -> bytes:
    """One record's line, completed at unix time ``at`` (the journal's only
    allocation per request)."""
    api_key_id, user_id, deployment_id, deployment_name, day = key
    return (
        f"{at:.3f}\t{day}\t{api_key_id}\t{user_id}\t{deployment_id}\t{deployment_name}"
        f"\t{prompt_tokens}\t{completion_tokens}\n"
    ).encode()


def decode(line: bytes) -> tuple[float, UsageKey, Counts] | None:
    """A whole line's time (0.0 in the untimed format), key and counts; None
    for a malformed one."""
    fields = line.decode("utf-8", "replace").split("\t")
    at = 0.0
    if len(fields) == _FIELDS:
        try:
            at = float(fields.pop(0))
        except ValueError:
            return None
    if len(fields) != _UNTIMED_FIELDS or not (fields[5].isdigit() and fields[6].isdigit()):
        return None
    day, api_key_id, user_id, deployment_id, deployment_name = fields[:5]
    key = (api_key_id, user_id, deployment_id, deployment_name, day)
    return at, key, Counts(1, int(fields[5]), int(fields[6]))


def records(data: bytes, where: str) -> Iterator[tuple[float, UsageKey, Counts]]:
    """A segment's whole, well-formed records; a torn or malformed line is
    logged and skipped."""
    lines = data.split(b"\n")
    if lines[-1]:
        log.warning("%s: skipping a torn last record (%d bytes)", where, len(lines[-1]))
    for number, line in enumerate(lines[:-1], 1):
        record = decode(line)
        if record is None:
            log.warning("%s:%d: skipping a malformed record", where, number)
            continue
        yield record


def aggregate(data: bytes, where: str) -> Segment:
    """The counts of a segment's records and the time of its newest."""
    out = Segment()
    for at, key, counts in records(data, where):
        out.counts.setdefault(key, Counts()).add(counts)
        out.newest = max(out.newest, at)
    return out


class UsageJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.controller_id = _read_or_create_id(directory / ID_FILE)
        except OSError as exc:
            raise ConfigError(f"cannot use usage journal {directory}: {exc}") from exc
        self.segment = 0  # the open one; 0 until ``open``
        self._fd = -1
        self._written = 0
        self._broken = False
        self._unsealed: list[int] = []

    def path(self, segment: int) -> Path:
        return self.directory / f"{_PREFIX}{segment:012d}{_SUFFIX}"

    def on_disk(self) -> list[int]:
        """Every segment's number, oldest first (the open one included)."""
        found = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            number = path.name[len(_PREFIX) : -len(_SUFFIX)]
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def closed(self) -> list[int]:
        """The segments waiting to be added to the database, oldest first."""
        return [segment for segment in self.on_disk() if segment != self.segment]

    def open(self, after: int) -> None:
        """Start appending to a new segment numbered above ``after`` and above
        every segment on disk."""
        self._start(max([after, *self.on_disk()]) + 1)

    def append(self, line: bytes) -> bool:
        """Append one record; False when the journal could not take it whole
        (the caller keeps it some other way)."""
        if self._broken:
            return False
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            written = 0
            log.error("usage journal %s refused a record: %s", self.path(self.segment), exc)
        self._written += written
        if written != len(line):
            self._broken = True
            return False
        return True

    def rotate(self) -> int | None:
        """Start the next segment and return the number of the one closed; None
        (and nothing done) when the open segment is empty. ``seal`` makes the
        closed one durable."""
        if not self._written and not self._broken:
            return None
        closing, fd = self.segment, self._fd
        self._start(closing + 1)
        self._unsealed.append(fd)
        return closing

    def seal(self) -> None:
        """fsync the segments ``rotate`` closed, and the directory (blocking: run
        it in a worker thread)."""
        while self._unsealed:
            fd = self._unsealed.pop()
            try:
                os.fsync(fd)
            except OSError as exc:
                log.error("cannot fsync a usage journal segment: %s", exc)
            finally:
                os.close(fd)
        try:
            _fsync_directory(self.directory)
        except OSError as exc:
            log.error("cannot fsync usage journal %s: %s", self.directory, exc)

    def read(self, segment: int) -> Segment:
        path = self.path(segment)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read usage journal {path}: {exc}") from exc
        return aggregate(data, str(path))

    def recent(self, since: float) -> list[RecentEvent]:
        """Every record completed at or after unix time ``since``, in every
        segment on disk (added or not), oldest first. Blocking; an unreadable
        segment is logged and skipped."""
        out: list[RecentEvent] = []
        for segment in self.on_disk():
            path = self.path(segment)
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning("cannot read usage journal %s: %s", path, exc)
                continue
            for at, key, counts in records(data, str(path)):
                if at >= since:
                    tokens = counts.prompt_tokens + counts.completion_tokens
                    out.append((at, key[0], key[1], tokens))
        out.sort()
        return out

    def remove(self, segments: list[int]) -> None:
        """Delete closed segments whose counts the database holds (and whose
        records are too old for ``recent``)."""
        for segment in segments:
            try:
                self.path(segment).unlink(missing_ok=True)
            except OSError as exc:
                # Harmless: the checkpoint keeps it from counting twice.
                log.warning("cannot delete usage journal segment %d: %s", segment, exc)

    def close(self) -> None:
        """Seal and close the open segment: it stays on disk until it is added
        (an empty one is deleted)."""
        self.seal()
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self._written and not self._broken:
            self.path(self.segment).unlink(missing_ok=True)  # nothing to add

    def _start(self, segment: int) -> None:
        path = self.path(segment)
        try:
            fd = os.open(path, _APPEND, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot start usage journal {path}: {exc}") from exc
        self.segment, self._fd, self._written, self._broken = segment, fd, 0, False


def _read_or_create_id(path: Path) -> str:
    value = read_or_create(path, str(uuid.uuid4()))
    if not value:
        raise OSError(f"{path} is empty; delete it to make a new journal id")
    return value


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
