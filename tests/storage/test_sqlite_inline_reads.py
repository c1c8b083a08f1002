"""Reads on the trio thread (``ReaderPool.run_inline`` and ``lookup``) and the writer's
admission of jobs: what the SQLite backend promises about them beyond the conformance suite.

The inline reads have a connection of their own: they never wait for, or take, a pool
connection, see every commit that returned before them, and leave no read transaction open
(an open one would pin an old WAL snapshot). Real threads and clock, no timed assertions.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from storage.errors import StoreClosed
from storage.sqlite.database import Database, DatabaseOptions, connect, open_database
from storage.sqlite.readers import INLINE_BUDGET, ReaderPool, open_readers
from storage.sqlite.writer import open_writer


@asynccontextmanager
async def cross_db(tmp_path: Path, *, readers: int = 2) -> AsyncIterator[Database]:
    options = DatabaseOptions(readers=readers)
    async with open_database(tmp_path / "cross.db", domain="cross", options=options) as db:
        yield db


def add_conversation(conv_id: str) -> Callable[[sqlite3.Connection], None]:
    def add(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO conversations (conv_id, kind, title, created_at, member_limit)"
            " VALUES (?, 'group', '', 0, 10)",
            (conv_id,),
        )

    return add


def conv_id_of(row: tuple[str]) -> str:
    return row[0]


BY_ID = "SELECT conv_id FROM conversations WHERE conv_id = ?"


async def test_a_lookup_sees_what_committed_before_it_and_keeps_no_transaction_open(
    tmp_path: Path,
) -> None:
    async with cross_db(tmp_path) as db:
        assert await db.readers.lookup("by_id", BY_ID, ("g:1",), conv_id_of) is None
        await db.writer.run("add", add_conversation("g:1"))
        assert await db.readers.lookup("by_id", BY_ID, ("g:1",), conv_id_of) == "g:1"
        seen = await db.readers.run_inline(
            "count", lambda conn: conn.execute("SELECT count(*) FROM conversations").fetchone()
        )
        assert seen == (1,)
        inline = db.readers._inline
        assert inline is not None and not inline.in_transaction
        # A later commit is seen at once: no snapshot was left pinned by the reads above.
        await db.writer.run("add", add_conversation("g:2"))
        assert await db.readers.lookup("by_id", BY_ID, ("g:2",), conv_id_of) == "g:2"
        assert not inline.in_transaction


async def test_a_lookup_refuses_a_statement_that_selects_several_rows(tmp_path: Path) -> None:
    async with cross_db(tmp_path) as db:
        await db.writer.run("add", add_conversation("g:1"))
        await db.writer.run("add", add_conversation("g:2"))
        with pytest.raises(ValueError, match="2 rows"):
            await db.readers.lookup("all", "SELECT conv_id FROM conversations", (), conv_id_of)
        assert db.readers._inline is not None and not db.readers._inline.in_transaction


async def test_inline_reads_run_on_the_trio_thread_without_a_pool_connection(
    tmp_path: Path,
) -> None:
    """Even with every pool connection busy in a thread, an inline read runs at once, here."""
    async with cross_db(tmp_path, readers=1) as db:
        entered, release = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            entered.set()
            release.wait(30)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.readers.run_in_thread, "hold", hold)
            await trio.to_thread.run_sync(entered.wait, 30)
            assert db.readers.statistics().reads_running == 1

            def where(conn: sqlite3.Connection) -> tuple[str, int]:
                return threading.current_thread().name, db.readers.statistics().reads_running

            assert await db.readers.run_inline("where", where) == (
                threading.main_thread().name,
                1,  # only the held read: the inline one took no token
            )
            assert await db.readers.lookup("by_id", BY_ID, ("none",), conv_id_of) is None
            release.set()


async def test_inline_reads_fail_with_store_closed_once_the_pool_is_closed(
    tmp_path: Path,
) -> None:
    async with cross_db(tmp_path) as db:
        pool = db.readers
    with pytest.raises(StoreClosed):
        await pool.lookup("by_id", BY_ID, ("g:1",), conv_id_of)
    with pytest.raises(StoreClosed):
        await pool.run_inline("one", lambda conn: conn.execute("SELECT 1").fetchone())


async def test_a_pool_without_an_inline_connection_still_reads_inline(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    conn = connect(path, DatabaseOptions())
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (7)")
    conn.close()
    async with open_readers([connect(path, DatabaseOptions(), read_only=True)], name="p") as pool:
        assert isinstance(pool, ReaderPool)
        assert await pool.lookup("k", "SELECT k FROM t WHERE k = ?", (7,), lambda r: r[0]) == 7
        assert await pool.lookup("k", "SELECT k FROM t WHERE k = ?", (8,), lambda r: r[0]) is None


async def test_a_writer_caller_cancelled_before_queueing_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = connect(path, DatabaseOptions())
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    ran: list[int] = []

    def job(c: sqlite3.Connection) -> None:
        ran.append(1)
        c.execute("INSERT INTO t VALUES (1)")

    async with open_writer(conn, name=path.name) as writer:
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.run("job", job)
        assert scope.cancelled_caught
        assert writer.statistics().jobs_in_flight == 0
        await writer.run("noop", lambda c: None)
    assert ran == []


async def test_a_short_read_runs_on_the_trio_thread_and_a_long_one_moves_to_a_thread(
    tmp_path: Path,
) -> None:
    """``run`` tries the trio thread within the budget; a read that outruns it is
    interrupted and runs again in a worker thread, and its name then skips the trio thread
    for a while. Both give the full result."""
    long_sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)"
        " SELECT count(*) FROM n"
    )

    def short(conn: sqlite3.Connection) -> tuple[str, int]:
        (one,) = conn.execute("SELECT 1").fetchone()
        return threading.current_thread().name, one

    threads: list[str] = []

    def long(conn: sqlite3.Connection) -> int:
        threads.append(threading.current_thread().name)
        (count,) = conn.execute(long_sql).fetchone()
        return int(count)

    async with cross_db(tmp_path) as db:
        pool = db.readers
        assert await pool.run("short", short) == (threading.main_thread().name, 1)
        assert await pool.run("long", long) == 3_000_000
        assert threads[0] == threading.main_thread().name  # tried here first, interrupted
        assert threads[1] != threading.main_thread().name  # then run again in a thread
        assert await pool.run("long", long) == 3_000_000
        assert threads[2] != threading.main_thread().name  # backed off: straight to a thread
        assert await pool.run("short", short) == (threading.main_thread().name, 1)
        assert pool.inline_overruns == 1


async def test_a_read_that_only_waits_stays_on_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget counts the trio thread's CPU time, not the wall clock: a read whose wall
    time passes the budget while it waits (here in ``time.sleep``; in the server for the
    GIL or the CPU) and uses no CPU of its own is neither interrupted nor moved."""
    monkeypatch.setattr(time, "thread_time", lambda: 0.0)  # this thread never uses CPU
    waits_sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)"
        " SELECT sum(pause(i)) FROM n"
    )

    def waits(conn: sqlite3.Connection) -> tuple[str, int]:
        conn.create_function("pause", 1, lambda i: time.sleep(INLINE_BUDGET / 20) or i)
        (total,) = conn.execute(waits_sql).fetchone()
        return threading.current_thread().name, int(total)

    async with cross_db(tmp_path) as db:
        pool = db.readers
        assert await pool.run("waits", waits) == (threading.main_thread().name, 400 * 401 // 2)
        assert pool.inline_overruns == 0
