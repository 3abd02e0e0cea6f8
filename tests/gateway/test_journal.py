"""The usage journal and its exactly-once path into the database, on a real
database (SQLite and PostgreSQL) and real files: appends survive a recorder
that is dropped without a flush (the in-process stand-in for a SIGKILL), a torn
last line is skipped, and a crash before the commit or between the commit and
the deletion neither loses nor double-counts; added segments stay for a minute
(the rate windows ``recent`` rebuilds) and are never added twice."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.gateway.journal import Counts, Segment, UsageJournal, aggregate, encode
from controller.gateway.usage import UsageRecorder
from controller.store import Database, Usage, UsageCheckpoint

KEY = ("key-1", "user-1", "dep-1", "tiny-chat", "2026-12-01")
AT = 1_796_000_000.0  # a unix time in 2026
DAY = datetime.fromtimestamp(AT, UTC).date().isoformat()


class Clock:
    """Unix time that moves only when a test moves it."""

    def __init__(self, now: float = AT) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path, database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url or f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await database.create_schema()
    yield database
    await database.close()


async def started(
    db: Database, directory: Path, clock: Clock | None = None, *, retain: float = 0.0
) -> UsageRecorder:
    """A recorder as a controller starts one: earlier segments replayed first.
    ``retain`` 0: added segments go at once, unless a test keeps them."""
    recorder = UsageRecorder(db, UsageJournal(directory), retain=retain, clock=clock or Clock())
    await recorder.replay()
    return recorder


def record(
    recorder: UsageRecorder,
    times: int,
    *,
    prompt: int = 3,
    completion: int = 2,
    api_key_id: str | None = "key-1",
) -> None:
    for _ in range(times):
        recorder.record(
            api_key_id=api_key_id, user_id="user-1", deployment_id="dep-1",
            deployment_name="tiny-chat", prompt_tokens=prompt, completion_tokens=completion,
        )  # fmt: skip


async def totals(db: Database) -> tuple[int, int, int]:
    stmt = select(
        func.coalesce(func.sum(Usage.requests), 0),
        func.coalesce(func.sum(Usage.prompt_tokens), 0),
        func.coalesce(func.sum(Usage.completion_tokens), 0),
    )
    async with db.session() as session:
        row = (await session.execute(stmt)).one()
    return int(row[0]), int(row[1]), int(row[2])


def test_append_rotate_read(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path / "journal")
    journal.open(after=0)
    assert journal.rotate() is None  # nothing appended: no new segment
    assert journal.append(encode(KEY, 3, 2, AT)) and journal.append(encode(KEY, 4, 1, AT + 1))
    assert journal.rotate() == 1
    assert journal.segment == 2 and journal.closed() == [1]
    journal.seal()
    assert journal.read(1) == Segment({KEY: Counts(2, 7, 3)}, newest=AT + 1)
    journal.remove([1])
    journal.close()
    assert journal.on_disk() == []  # the open segment was empty: deleted on close
    assert UsageJournal(tmp_path / "journal").controller_id == journal.controller_id


def test_open_starts_above_the_checkpoint_and_every_file(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    journal.path(7).write_bytes(b"")
    journal.open(after=3)
    assert journal.segment == 8
    journal.close()
    journal.open(after=12)
    assert journal.segment == 13
    journal.close()


def test_a_torn_or_malformed_line_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    whole = encode(KEY, 3, 2, AT)
    untimed = whole.split(b"\t", 1)[1]  # the first format: no time
    data = whole + b"garbage\tline\n" + b"x" + whole + whole + whole[:20]
    with caplog.at_level(logging.WARNING, "lmstack.gateway.journal"):
        assert aggregate(data, "segment") == Segment({KEY: Counts(2, 6, 4)}, newest=AT)
        assert aggregate(untimed, "old") == Segment({KEY: Counts(1, 3, 2)}, newest=0.0)
    assert "torn last record" in caplog.text and "segment:2: skipping a malformed" in caplog.text
    assert "segment:3: skipping a malformed" in caplog.text  # a time that is not a number


async def test_records_survive_a_recorder_dropped_without_a_flush(
    db: Database, tmp_path: Path
) -> None:
    recorder = await started(db, tmp_path / "journal")
    record(recorder, 5)
    del recorder  # killed: no flush, no close; the file is all that is left
    await started(db, tmp_path / "journal")
    assert await totals(db) == (5, 15, 10)
    assert UsageJournal(tmp_path / "journal").on_disk() == [2]  # 1 added, then deleted


async def test_flush_adds_once_and_deletes_the_segment(db: Database, tmp_path: Path) -> None:
    recorder = await started(db, tmp_path / "journal")
    record(recorder, 3)
    await recorder.flush()
    await recorder.flush()  # nothing new
    assert await totals(db) == (3, 9, 6)
    record(recorder, 1, prompt=10, completion=0)
    await recorder.flush()
    assert await totals(db) == (4, 19, 6)
    async with db.session() as session:
        assert await session.scalar(select(Usage.day)) == DAY
        assert await session.scalar(select(UsageCheckpoint.segment)) == 2
    assert UsageJournal(tmp_path / "journal").closed() == [3]  # only the open one


async def test_a_crash_between_commit_and_delete_does_not_count_twice(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(db, journal, retain=0.0, clock=Clock())
    await recorder.replay()
    record(recorder, 4)
    # The process dies right after the commit: the segment file stays.
    monkeypatch.setattr(journal, "remove", lambda segments: None)
    await recorder.flush()
    assert await totals(db) == (4, 12, 8)
    assert journal.closed() == [1]
    await started(db, tmp_path / "journal")
    assert await totals(db) == (4, 12, 8)
    assert not journal.path(1).exists()  # at the checkpoint: deleted unread


async def test_a_crash_before_the_commit_loses_nothing(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(db, journal, retain=0.0, clock=Clock())
    await recorder.replay()
    record(recorder, 2)

    async def dies(*_: object) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(recorder, "_apply", dies)
    with pytest.raises(RuntimeError):
        await recorder.flush()
    record(recorder, 1)  # recorded after the failed flush: in the next segment
    assert await totals(db) == (0, 0, 0)
    await started(db, tmp_path / "journal")
    assert await totals(db) == (3, 9, 6)


async def test_a_failed_flush_is_retried_in_the_same_run(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = await started(db, tmp_path / "journal")
    record(recorder, 2)
    apply = recorder._apply

    async def fails_once(*args: object) -> None:
        monkeypatch.setattr(recorder, "_apply", apply)
        raise RuntimeError("database went away")

    monkeypatch.setattr(recorder, "_apply", fails_once)
    with pytest.raises(RuntimeError):
        await recorder.flush()
    record(recorder, 1)
    await recorder.flush()
    assert await totals(db) == (3, 9, 6)


async def test_a_record_the_journal_refuses_is_kept_for_the_next_flush(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(db, journal, retain=0.0, clock=Clock())
    await recorder.replay()
    record(recorder, 1)
    # A write that fails (as on a full disk): the descriptor is gone.
    os.close(os.dup2(os.open(os.devnull, os.O_RDONLY), journal._fd))
    with caplog.at_level(logging.ERROR, "lmstack.gateway.journal"):
        record(recorder, 2)
    assert "refused a record" in caplog.text
    await recorder.flush()
    assert await totals(db) == (3, 9, 6)
    record(recorder, 1)  # the new segment takes records again
    assert journal.closed() == []
    await recorder.flush()
    assert await totals(db) == (4, 12, 8)


async def test_controllers_sharing_a_database_keep_their_own_checkpoints(
    db: Database, tmp_path: Path
) -> None:
    first, second = await started(db, tmp_path / "a"), await started(db, tmp_path / "b")
    record(first, 2)
    record(second, 3)
    await first.flush()
    await second.flush()
    assert await totals(db) == (5, 15, 10)
    async with db.session() as session:
        assert len(list(await session.scalars(select(UsageCheckpoint)))) == 2


async def test_added_segments_stay_a_minute_then_go(db: Database, tmp_path: Path) -> None:
    clock, journal = Clock(), UsageJournal(tmp_path / "journal")
    recorder = await started(db, tmp_path / "journal", clock, retain=60.0)
    record(recorder, 2)
    clock.now += 10
    record(recorder, 1)
    await recorder.flush()  # added, kept: its newest record is 0 s old
    assert await totals(db) == (3, 9, 6)
    assert journal.on_disk() == [1, 2]
    clock.now += 59
    await recorder.flush()
    await recorder.flush()  # kept segments are never added again
    assert await totals(db) == (3, 9, 6) and journal.on_disk() == [1, 2]
    clock.now += 2  # the newest record is 61 s old
    await recorder.flush()
    assert journal.on_disk() == [2]  # only the open one
    assert await totals(db) == (3, 9, 6)


async def test_recent_returns_the_newer_records_of_every_segment(
    db: Database, tmp_path: Path
) -> None:
    clock = Clock()
    recorder = await started(db, tmp_path / "journal", clock, retain=60.0)
    record(recorder, 1, prompt=1, completion=1)
    clock.now += 20
    record(recorder, 1, prompt=5, completion=5, api_key_id=None)  # a login token
    await recorder.flush()  # the first two are added and kept
    clock.now += 20
    record(recorder, 1, prompt=7, completion=0)  # still in the open segment
    newer = [(AT + 20, "", "user-1", 10), (AT + 40, "key-1", "user-1", 7)]
    assert recorder.recent(AT + 10) == newer
    assert len(recorder.recent(AT)) == 3 and recorder.recent(AT + 41) == []


async def test_a_restart_reads_kept_segments_back_and_adds_them_not_again(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    first = await started(db, tmp_path / "journal", clock, retain=60.0)
    record(first, 3)
    await first.flush()  # added and kept
    clock.now += 5
    record(first, 2)  # not added: the process is killed
    del first
    clock.now += 5
    with caplog.at_level(logging.INFO, "lmstack.gateway.usage"):
        second = await started(db, tmp_path / "journal", clock, retain=60.0)
    assert "replaying 1 usage journal segment" in caplog.text  # the kept one is not replayed
    assert await totals(db) == (5, 15, 10)
    assert [event[0] for event in second.recent(AT)] == [AT] * 3 + [AT + 5] * 2
    await second.flush()
    clock.now += 120
    await second.flush()  # both old now: deleted, still counted once
    assert await totals(db) == (5, 15, 10)
    assert second.recent(AT) == []
    third = await started(db, tmp_path / "journal", clock, retain=60.0)
    assert await totals(db) == (5, 15, 10) and third.recent(AT) == []
