"""The usage journal and its exactly-once path into the database, on a real
database (SQLite and PostgreSQL) and real files: appends survive a recorder
that is dropped without a flush (the in-process stand-in for a SIGKILL), a torn
last line is skipped, and a crash before the commit or between the commit and
the deletion neither loses nor double-counts."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.gateway.journal import Counts, UsageJournal, aggregate, encode
from controller.gateway.usage import UsageRecorder, today
from controller.store import Database, Usage, UsageCheckpoint

KEY = ("key-1", "user-1", "dep-1", "tiny-chat", "2026-12-01")


@pytest.fixture
async def db(tmp_path: Path, database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url or f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await database.create_schema()
    yield database
    await database.close()


async def started(db: Database, directory: Path) -> UsageRecorder:
    """A recorder as a controller starts one: earlier segments replayed first."""
    recorder = UsageRecorder(db, UsageJournal(directory))
    await recorder.replay()
    return recorder


def record(recorder: UsageRecorder, times: int, *, prompt: int = 3, completion: int = 2) -> None:
    for _ in range(times):
        recorder.record(
            api_key_id="key-1", user_id="user-1", deployment_id="dep-1",
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
    assert journal.append(encode(KEY, 3, 2)) and journal.append(encode(KEY, 4, 1))
    assert journal.rotate() == 1
    assert journal.segment == 2 and journal.closed() == [1]
    journal.seal()
    assert journal.read(1) == {KEY: Counts(2, 7, 3)}
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
    whole = encode(KEY, 3, 2)
    data = whole + b"garbage\tline\n" + whole + whole[:20]
    with caplog.at_level(logging.WARNING, "lmstack.gateway.journal"):
        assert aggregate(data, "segment") == {KEY: Counts(2, 6, 4)}
    assert "torn last record" in caplog.text and "segment:2: skipping a malformed" in caplog.text


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
        assert await session.scalar(select(Usage.day)) == today()
        assert await session.scalar(select(UsageCheckpoint.segment)) == 2
    assert UsageJournal(tmp_path / "journal").closed() == [3]  # only the open one


async def test_a_crash_between_commit_and_delete_does_not_count_twice(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = UsageJournal(tmp_path / "journal")
    recorder = UsageRecorder(db, journal)
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
    recorder = UsageRecorder(db, journal)
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
    recorder = UsageRecorder(db, journal)
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
