"""WAL checkpoints run beside the writer, not inside its commits (storage.sqlite.checkpointer).

What must hold: committed rows reach the main database file without the writer checkpointing
(its own automatic checkpoint is only a backstop); an idle database is not checkpointed over
and over; the checkpointer's thread and connection end with the database; ``None`` keeps
SQLite's own behaviour. Real threads and the real clock.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from storage.sqlite import checkpointer
from storage.sqlite.checkpointer import BACKSTOP_PAGES, run_checkpointer
from storage.sqlite.database import DatabaseOptions, connect, open_database
from tests.e2e.waiting import wait_until


def _add_conversations(first: int, count: int):  # type: ignore[no-untyped-def]
    def add(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO conversations (conv_id, kind, title, created_at, member_limit)"
            " VALUES (?, 'group', '', 0, 10)",
            [(f"g:{n}",) for n in range(first, first + count)],
        )

    return add


def _rows_in_main_file(db_path: Path, copy_to: Path) -> int:
    """Conversations in the main database file alone, without its write-ahead log (a copy
    of the file opened on its own sees only what was checkpointed into it)."""
    shutil.copyfile(db_path, copy_to)
    conn = sqlite3.connect(copy_to)
    try:
        (count,) = conn.execute("SELECT count(*) FROM conversations").fetchone()
        return int(count or 0)
    except sqlite3.OperationalError:  # not even the schema was checkpointed yet
        return 0
    finally:
        conn.close()


class _Commits:
    """The writer's commit count, as a test moves it."""

    def __init__(self) -> None:
        self.count = 0


@asynccontextmanager
async def _checkpointing(
    tmp_path: Path, commits: _Commits, *, lock: threading.Lock | None = None
) -> AsyncIterator[None]:
    """A migrated cross.db and a checkpointer on it every 10 ms, driven by ``commits``."""
    path = tmp_path / "cross.db"
    async with open_database(path, domain="cross", options=DatabaseOptions(readers=1)):
        pass  # creates and migrates the file
    async with run_checkpointer(
        lambda: connect(path, DatabaseOptions()),
        lambda: commits.count,
        name="cross.db",
        lock=lock or threading.Lock(),
        interval=0.01,
    ):
        yield


async def _autocheckpoint_of_writer(db) -> int:  # type: ignore[no-untyped-def]
    value = await db.writer.run(
        "read pragma", lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    )
    return int(value)


async def test_commits_reach_the_main_file_without_the_writer_checkpointing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cross.db"
    options = DatabaseOptions(readers=1, checkpoint_interval=0.02)
    async with open_database(path, domain="cross", options=options) as db:
        # The writer checkpoints only past the backstop: 200 rows are far below it.
        assert await _autocheckpoint_of_writer(db) == BACKSTOP_PAGES
        for batch in range(20):
            await db.writer.run("add", _add_conversations(batch * 10, 10))
        with trio.fail_after(5):
            await wait_until(lambda: _rows_in_main_file(path, tmp_path / "copy.db") == 200)


async def test_without_an_interval_sqlite_checkpoints_in_the_commit_as_before(
    tmp_path: Path,
) -> None:
    options = DatabaseOptions(readers=1, checkpoint_interval=None)
    before = {t.ident for t in threading.enumerate()}
    async with open_database(tmp_path / "cross.db", domain="cross", options=options) as db:
        assert await _autocheckpoint_of_writer(db) == 1000  # SQLite's default
        await db.writer.run("add", _add_conversations(0, 5))
    assert {t.ident for t in threading.enumerate()} <= before | {None}


async def test_an_idle_database_is_not_checkpointed_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_checkpoint = checkpointer.checkpoint

    def counting(conn: sqlite3.Connection) -> tuple[int, int, int]:
        calls.append(1)
        return real_checkpoint(conn)

    monkeypatch.setattr(checkpointer, "checkpoint", counting)
    commits = _Commits()
    async with _checkpointing(tmp_path, commits):
        await trio.sleep(0.1)
        assert calls == []  # nothing committed: nothing to copy
        commits.count = 1
        with trio.fail_after(5):
            await wait_until(lambda: bool(calls), step=0.01)
        settled = len(calls)
        await trio.sleep(0.1)
        assert len(calls) == settled  # once per change of the commit count


async def test_a_failing_checkpoint_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def busy(conn: sqlite3.Connection) -> tuple[int, int, int]:
        attempts.append(1)
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(checkpointer, "checkpoint", busy)
    commits = _Commits()
    async with _checkpointing(tmp_path, commits):
        commits.count = 1  # one change, and every failed round tries it again
        with trio.fail_after(5):
            await wait_until(lambda: len(attempts) >= 3, step=0.01)
    assert "background checkpoint failed" in caplog.text


async def test_the_checkpointer_thread_and_connection_end_with_the_database(
    tmp_path: Path,
) -> None:
    before = {t.ident for t in threading.enumerate()}
    options = DatabaseOptions(readers=1, checkpoint_interval=0.01)
    async with open_database(tmp_path / "cross.db", domain="cross", options=options) as db:
        for batch in range(5):
            await db.writer.run("add", _add_conversations(batch * 10, 10))
            await trio.sleep(0.02)
    # The checkpointer's thread is joined; the last connection closed, so SQLite removed
    # the write-ahead log.
    assert not (tmp_path / "cross.db-wal").exists()
    leftover = {t for t in threading.enumerate() if t.ident not in before}
    assert not [t for t in leftover if "checkpointer" in t.name]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="checkpoint_interval"):
        DatabaseOptions(checkpoint_interval=0)


async def test_a_partial_or_busy_checkpoint_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (busy, frames in the log, frames copied): a reader on an old snapshot held frames
    # back, then another checkpointer was running, then everything was copied.
    answers = [(0, 10, 4), (1, -1, -1), (0, 10, 10)]
    calls: list[tuple[int, int, int]] = []

    def scripted(conn: sqlite3.Connection) -> tuple[int, int, int]:
        answer = answers[min(len(calls), len(answers) - 1)]
        calls.append(answer)
        return answer

    monkeypatch.setattr(checkpointer, "checkpoint", scripted)
    commits = _Commits()
    async with _checkpointing(tmp_path, commits):
        commits.count = 1  # one commit: tried until all of it is copied, then left alone
        with trio.fail_after(5):
            await wait_until(lambda: len(calls) >= 3, step=0.01)
        await trio.sleep(0.1)
    assert calls == answers


async def test_the_checkpointer_holds_the_lock_while_it_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    held: list[bool] = []
    real_checkpoint = checkpointer.checkpoint

    def observed(conn: sqlite3.Connection) -> tuple[int, int, int]:
        held.append(lock.locked())
        return real_checkpoint(conn)

    monkeypatch.setattr(checkpointer, "checkpoint", observed)
    commits = _Commits()
    async with _checkpointing(tmp_path, commits, lock=lock):
        commits.count = 1
        with trio.fail_after(5):
            await wait_until(lambda: bool(held), step=0.01)
    assert held and all(held)


async def test_truncating_after_destroyed_keys_waits_for_a_background_checkpoint(
    tmp_path: Path,
) -> None:
    # A3: after keys are destroyed the log is checkpointed with TRUNCATE; SQLite would
    # answer "busy" at once if the background checkpointer were running then.
    from storage.sqlite.keys import _truncate_wal

    path = tmp_path / "cross.db"
    options = DatabaseOptions(readers=1, checkpoint_interval=60)  # the test drives it
    async with open_database(path, domain="cross", options=options) as db:
        await db.writer.run("add", _add_conversations(0, 50))
        assert (tmp_path / "cross.db-wal").stat().st_size > 0
        db.checkpoint_lock.acquire()  # a background checkpoint "under way"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, _truncate_wal, db)
                await trio.sleep(0.1)
                assert (tmp_path / "cross.db-wal").stat().st_size > 0  # still waiting
                db.checkpoint_lock.release()
        finally:
            if db.checkpoint_lock.locked():
                db.checkpoint_lock.release()
        assert (tmp_path / "cross.db-wal").stat().st_size == 0
