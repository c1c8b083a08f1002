"""The SQLite backend's machinery: the group-commit writer, durability, limits, migrations.

The behaviour of the stores themselves is the conformance suite's; this file checks what
only the SQLite backend has: batching, isolation of a failing job inside its batch, the
hand-back of results, backpressure, StorageFull, schema versions and thread lifetimes.
These tests use real threads and the real clock (no autojump).
"""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from storage.errors import StorageFull, StoreClosed, StoreUnavailable
from storage.records import IdempotencyKey, NewConversation, NewEntry
from storage.sqlite import SchemaError, SchemaTooNew, open_sqlite_stores
from storage.sqlite.cross import SqliteCrossDomainStore
from storage.sqlite.database import DatabaseOptions, connect, open_database
from storage.sqlite.migrations import load_migrations
from storage.sqlite.writer import SqliteWriter, open_writer

NOW = 1_000_000
WRITER_THREAD = "rivet-sqlite-writer"


class Gate:
    """A job that holds the writer thread until the test opens the gate, so that the jobs
    queued meanwhile are all waiting when the thread takes its next batch."""

    def __init__(self) -> None:
        self._entered = threading.Event()
        self._open = threading.Event()

    def job(self, conn: sqlite3.Connection) -> None:
        self._entered.set()
        if not self._open.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")

    async def hold(self, writer: SqliteWriter, nursery: trio.Nursery) -> None:
        """Queue the gate job and return once the writer thread is inside it."""
        nursery.start_soon(writer.run, "gate", self.job)
        await trio.to_thread.run_sync(self._entered.wait, 30)

    def open(self) -> None:
        self._open.set()


def insert(value: str) -> Callable[[sqlite3.Connection], int]:
    def insert(conn: sqlite3.Connection) -> int:
        cursor = conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    return insert


def rows(path: Path) -> dict[int, str]:
    """What another connection sees: only committed rows."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM t ORDER BY k").fetchall())
    finally:
        conn.close()


@asynccontextmanager
async def writer_on(
    path: Path, *, queue_size: int = 1024, foreign_keys: bool = False
) -> AsyncIterator[SqliteWriter]:
    conn = connect(path, DatabaseOptions())
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    if foreign_keys:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (parent_id INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        conn.execute("PRAGMA foreign_keys = ON")
    async with open_writer(conn, name=path.name, queue_size=queue_size) as writer:
        yield writer


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(WRITER_THREAD)]


# --- group commit ------------------------------------------------------------------------------


class CountingToken:
    """Counts the writer thread's calls into trio: one per batch, not one per job."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self.calls = 0

    def run_sync_soon(self, fn: Callable[..., object], *args: object) -> None:
        self.calls += 1
        self._token.run_sync_soon(fn, *args)


async def test_concurrent_writes_commit_in_one_batch_with_one_wake_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.db"
    results: dict[str, int] = {}

    async def write(value: str) -> None:
        results[value] = await writer.run("insert", insert(value))

    token = CountingToken(trio.lowlevel.current_trio_token())
    async with writer_on(path) as writer, trio.open_nursery() as nursery:
        monkeypatch.setattr(writer, "_token", token)
        gate = Gate()
        await gate.hold(writer, nursery)
        for index in range(50):
            nursery.start_soon(write, f"v{index}")
        await trio.testing.wait_all_tasks_blocked()
        assert writer.statistics().jobs_in_flight == 51
        gate.open()

    stats = writer.statistics()
    # The gate alone, then all 50 writes in one transaction and one wake-up.
    assert (stats.jobs, stats.batches, stats.commits) == (51, 2, 2)
    assert stats.largest_batch == 50
    assert stats.failed_jobs == stats.failed_transactions == 0
    assert token.calls == 2
    assert rows(path) == {k: v for v, k in results.items()}


async def test_unsynchronised_concurrent_writes_still_batch(tmp_path: Path) -> None:
    async with writer_on(tmp_path / "w.db") as writer, trio.open_nursery() as nursery:
        for index in range(200):
            nursery.start_soon(writer.run, "insert", insert(f"v{index}"))

    stats = writer.statistics()
    assert stats.jobs == 200
    assert stats.commits < 200
    assert stats.commits == stats.batches


async def test_each_result_reaches_its_own_waiter_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    seen: dict[int, str] = {}

    async def write(value: str) -> None:
        key = await writer.run("insert", insert(value))
        # Durable before acknowledged: another connection already sees the row.
        assert rows(path)[key] == value
        seen[key] = value

    async with writer_on(path) as writer, trio.open_nursery() as nursery:
        for index in range(100):
            nursery.start_soon(write, f"value-{index}")

    assert sorted(seen.values()) == sorted(f"value-{index}" for index in range(100))
    assert rows(path) == seen


async def test_a_failing_job_rolls_back_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "w.db"

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('half')")
        raise ValueError("refused")

    outcomes: dict[str, object] = {}

    async def attempt(name: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        try:
            outcomes[name] = await writer.run(name, fn)
        except ValueError as exc:
            outcomes[name] = exc

    async with writer_on(path) as writer, trio.open_nursery() as nursery:
        gate = Gate()
        await gate.hold(writer, nursery)
        nursery.start_soon(attempt, "before", insert("before"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(attempt, "failing", half_then_fail)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(attempt, "after", insert("after"))
        await trio.testing.wait_all_tasks_blocked()
        gate.open()

    assert isinstance(outcomes["failing"], ValueError)
    assert rows(path) == {outcomes["before"]: "before", outcomes["after"]: "after"}
    stats = writer.statistics()
    assert (stats.batches, stats.commits, stats.failed_jobs) == (2, 2, 1)


async def test_a_failed_commit_fails_every_job_of_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    errors: list[BaseException] = []

    def orphan(conn: sqlite3.Connection) -> None:
        # A deferred foreign key is only checked by COMMIT.
        conn.execute("INSERT INTO child (parent_id) VALUES (42)")

    async def attempt(fn: Callable[[sqlite3.Connection], object]) -> None:
        with pytest.raises(sqlite3.IntegrityError) as caught:
            await writer.run("doomed", fn)
        errors.append(caught.value)

    async with writer_on(path, foreign_keys=True) as writer:
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await gate.hold(writer, nursery)
            nursery.start_soon(attempt, insert("innocent"))
            nursery.start_soon(attempt, orphan)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        # The writer goes on after a failed commit.
        key = await writer.run("insert", insert("later"))

    assert len(errors) == 2
    assert errors[0] is not errors[1]  # each waiter raises its own exception object
    assert rows(path) == {key: "later"}
    assert writer.statistics().failed_transactions == 1


# --- backpressure, cancellation, closing ------------------------------------------------------


async def test_a_full_queue_makes_callers_wait_and_drops_nobody(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    done: list[int] = []

    async def write(index: int) -> None:
        await writer.run("insert", insert(f"v{index}"))
        done.append(index)

    async with writer_on(path, queue_size=4) as writer, trio.open_nursery() as nursery:
        gate = Gate()
        await gate.hold(writer, nursery)
        for index in range(10):
            nursery.start_soon(write, index)
        await trio.testing.wait_all_tasks_blocked()
        stats = writer.statistics()
        assert (stats.jobs_in_flight, stats.tasks_waiting) == (4, 7)
        gate.open()

    assert sorted(done) == list(range(10))
    assert len(rows(path)) == 10


async def test_a_caller_cancelled_once_queued_still_gets_its_answer(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    answers: list[int] = []
    async with writer_on(path) as writer:
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await gate.hold(writer, nursery)
            with trio.CancelScope() as scope:
                # The job is queued behind the gate; the caller is cancelled while it
                # waits, and the gate opens only after that.
                nursery.start_soon(_cancel_then_open, scope, gate)
                answers.append(await writer.run("insert", insert("cancelled")))
                await trio.lowlevel.checkpoint()  # where the cancellation is delivered
                answers.append(-1)  # never reached
            assert scope.cancel_called and scope.cancelled_caught
        key = await writer.run("insert", insert("next"))

    # The job ran and committed, and its caller learnt it before the cancellation landed.
    assert answers == [key - 1]
    assert rows(path) == {key - 1: "cancelled", key: "next"}
    assert not writer.thread.is_alive()


async def _cancel_then_open(scope: trio.CancelScope, gate: Gate) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    await trio.sleep(0.05)  # the cancelled caller is still waiting for its answer
    gate.open()


async def test_a_caller_cancelled_before_queueing_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with writer_on(path) as writer:
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.run("insert", insert("never"))
        assert scope.cancelled_caught
        key = await writer.run("insert", insert("next"))
    assert rows(path) == {key: "next"}


async def test_closing_runs_queued_jobs_then_joins_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    results: list[int] = []

    async def write(value: str) -> None:
        results.append(await writer.run("insert", insert(value)))

    async def open_gate_later(gate: Gate) -> None:
        await trio.sleep(0.05)
        gate.open()

    async with trio.open_nursery() as nursery:
        async with writer_on(path) as writer:
            gate = Gate()
            await gate.hold(writer, nursery)
            for index in range(20):
                nursery.start_soon(write, f"v{index}")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(open_gate_later, gate)
        # Leaving the block waited for all 20 queued writes and joined the thread.
        assert not writer.thread.is_alive()
        assert len(rows(path)) == 20

    assert len(results) == 20
    with pytest.raises(StoreClosed):
        await writer.run("insert", insert("too late"))


# --- the stores on disk --------------------------------------------------------------------------


def message(
    conv_id: str, seq_hint: int, *, body: bytes = b"hello", client_id: str | None = None
) -> NewEntry:
    return NewEntry(
        conv_id=conv_id,
        kind="message",
        sender=1,
        ts=NOW + seq_hint,
        body=body,
        idempotency=None
        if client_id is None
        else IdempotencyKey(sender=1, client_id=client_id, fingerprint=b"fp"),
        create=NewConversation(
            conv_id=conv_id,
            kind="group",
            title="team",
            owner_id=1,
            member_limit=500,
            members=((1, "owner"), (2, "member")),
        ),
    )


async def test_acknowledged_writes_survive_closing_and_reopening(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_sqlite_stores(data) as stores:
        user = await stores.personal.create_user(phone="+15550001", display_name="a", now=NOW)
        appended = [(await stores.cross.append(message("g:1", n))).entry for n in range(5)]
        await stores.cross.mark_read(conv_id="g:1", user_id=2, seq=3, now=NOW)
        group_number = await stores.cross.next_group_number()

    async with open_sqlite_stores(data) as stores:
        assert await stores.personal.get_user(user.user_id) == user
        history = await stores.cross.history(
            "g:1", visible_from=1, visible_to=None, before_seq=None, limit=10
        )
        assert history == appended
        member = await stores.cross.get_member("g:1", 2)
        assert member is not None and member.read_seq == 3
        assert await stores.cross.head() == appended[-1].stream + 1
        # Counters and stream positions carry on, never reused.
        assert await stores.cross.next_group_number() == group_number + 1
        more = await stores.cross.append(message("g:1", 9))
        assert (more.entry.seq, more.entry.stream) == (6, appended[-1].stream + 2)


async def test_data_dir_holds_one_database_per_domain_and_is_private(tmp_path: Path) -> None:
    data = tmp_path / "nested" / "data"
    async with open_sqlite_stores(data):
        pass

    assert (data / "personal.db").is_file()
    assert (data / "cross.db").is_file()
    assert (data / "organisations.db").is_file()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


async def test_synchronous_is_full_by_default_and_configurable(tmp_path: Path) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[int, str]:
        (synchronous,) = conn.execute("PRAGMA synchronous").fetchone()
        (journal_mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        return synchronous, journal_mode

    path = tmp_path / "cross.db"
    async with open_database(path, domain="cross", options=DatabaseOptions()) as db:
        assert await db.writer.run("pragmas", pragmas) == (2, "wal")  # 2: FULL
        assert await db.readers.run("pragmas", pragmas) == (2, "wal")
    normal = DatabaseOptions(synchronous="NORMAL")
    async with open_database(path, domain="cross", options=normal) as db:
        assert await db.writer.run("pragmas", pragmas) == (1, "wal")
    with pytest.raises(ValueError, match="synchronous"):
        async with open_sqlite_stores(tmp_path / "data", synchronous="SOMETIMES"):
            pass


async def test_appends_through_the_store_are_group_committed(tmp_path: Path) -> None:
    async with open_database(
        tmp_path / "cross.db", domain="cross", options=DatabaseOptions()
    ) as db:
        cross = SqliteCrossDomainStore(db)
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await gate.hold(db.writer, nursery)
            for index in range(100):
                nursery.start_soon(cross.append, message(f"g:{index % 7}", index))
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        stats = db.writer.statistics()
        assert (stats.jobs, stats.commits) == (101, 2)
        assert await cross.head() == 100


async def test_a_full_database_raises_storage_full_stores_nothing_and_still_reads(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    big = b"x" * 20_000  # several overflow pages per message
    async with open_sqlite_stores(data, max_page_count=64) as stores:
        stored = 0
        with pytest.raises(StorageFull):
            for index in range(1_000):
                await stores.cross.append(message("g:1", index, body=big, client_id=f"c{index}"))
                stored += 1
        assert stored > 0
        failed_client_id = f"c{stored}"

        # Nothing of the failed write: no entry, no seq, no stream position, no key.
        conversation = await stores.cross.get_conversation("g:1")
        assert conversation is not None
        assert conversation.last_seq == stored
        assert await stores.cross.get_entry("g:1", stored + 1) is None
        assert await stores.cross.head() == stored
        history = await stores.cross.history(
            "g:1", visible_from=1, visible_to=None, before_seq=None, limit=2_000
        )
        assert [e.seq for e in history] == list(range(1, stored + 1))
        # Reads go on, and so do the other domain's writes.
        assert len(await stores.cross.entries_for(2, after=0, limit=2_000)) == stored
        await stores.personal.create_user(phone="+15550002", display_name="b", now=NOW)

    conn = sqlite3.connect(data / "cross.db")
    try:
        keys = conn.execute(
            "SELECT count(*) FROM idempotency WHERE client_id = ?", (failed_client_id,)
        )
        assert keys.fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (stored,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_storage_full_in_a_batch_fails_only_what_was_lost(tmp_path: Path) -> None:
    """SQLite aborts the whole transaction on SQLITE_FULL: the jobs before the failing one
    in that batch are lost and told so (StorageFull), the jobs after it commit."""
    path = tmp_path / "w.db"
    outcomes: dict[str, object] = {}

    async def attempt(name: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        try:
            outcomes[name] = await writer.run(name, fn)
        except StorageFull as exc:
            outcomes[name] = exc

    def huge(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 1_000_000,))

    async with writer_on(path) as writer:
        await writer.run("cap", lambda conn: conn.execute("PRAGMA max_page_count = 50"))
        async with trio.open_nursery() as nursery:
            gate = Gate()
            await gate.hold(writer, nursery)
            for name, fn in [("lost", insert("lost")), ("huge", huge), ("after", insert("after"))]:
                nursery.start_soon(attempt, name, fn)
                await trio.testing.wait_all_tasks_blocked()
            gate.open()

    assert isinstance(outcomes["lost"], StorageFull)
    assert isinstance(outcomes["huge"], StorageFull)
    assert rows(path) == {outcomes["after"]: "after"}
    stats = writer.statistics()
    assert (stats.failed_jobs, stats.failed_transactions) == (2, 1)


# --- schema versions ---------------------------------------------------------------------------


async def test_a_database_from_a_newer_rivet_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_sqlite_stores(data):
        pass
    conn = sqlite3.connect(data / "cross.db")
    with conn:
        conn.execute(
            "INSERT INTO schema_version (version, domain, name, applied_at)"
            " VALUES (9999, 'cross', 'from_the_future', 0)"
        )
    conn.close()

    with pytest.raises(SchemaTooNew, match="schema version 9999 of the cross domain"):
        async with open_sqlite_stores(data):
            pass
    # personal.db had been opened before cross.db was refused: its thread is gone too.
    assert writer_threads() == []


async def test_a_database_of_another_domain_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_sqlite_stores(data):
        pass
    (data / "cross.db").unlink()
    (data / "personal.db").rename(data / "cross.db")
    for suffix in ("-wal", "-shm"):
        (data / f"personal.db{suffix}").unlink(missing_ok=True)

    with pytest.raises(SchemaError, match="holds the personal domain"):
        async with open_sqlite_stores(data):
            pass


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        async with open_sqlite_stores(data):
            pass
    conn = sqlite3.connect(data / "personal.db")
    try:
        rows = conn.execute("SELECT version, domain FROM schema_version").fetchall()
        assert rows == [(v, "personal") for v in range(1, len(rows) + 1)]
        assert len(rows) == len(load_migrations("personal"))
    finally:
        conn.close()


# --- threads -------------------------------------------------------------------------------------


async def test_no_writer_thread_outlives_the_stores(tmp_path: Path) -> None:
    before = writer_threads()
    async with open_sqlite_stores(tmp_path / "data") as stores:
        await stores.personal.create_user(phone="+15550003", display_name="c", now=NOW)
        running = [t for t in writer_threads() if t not in before]
        databases = sorted((tmp_path / "data").glob("*.db"))
        assert len(databases) >= 3  # one per domain
        assert sorted(t.name for t in running) == [f"{WRITER_THREAD}[{p.name}]" for p in databases]
    assert all(not thread.is_alive() for thread in running)
    assert writer_threads() == before


async def test_no_thread_outlives_stores_left_by_an_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with open_sqlite_stores(tmp_path / "data") as stores:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for index in range(20):
                        nursery.start_soon(stores.cross.append, message("g:1", index))
                    await trio.testing.wait_all_tasks_blocked()
                    # The appends' callers are cancelled while their jobs are queued.
                    scope.cancel()
            raise RuntimeError("boom")
    assert writer_threads() == []


# --- the writer thread dying -------------------------------------------------------------------
# A bug outside a batch's own error handling kills the thread. Its queued callers cannot be
# cancelled (they wait for their answer), so each must be answered at once; later writes are
# refused; closing does not hang. ``fail_after`` bounds every wait (a hang fails the test).


class WriterBug(Exception):
    pass


async def outcome_of(
    writer: SqliteWriter, name: str, fn: Callable[[sqlite3.Connection], object]
) -> object:
    try:
        return await writer.run(name, fn)
    except Exception as exc:
        return exc


def assert_all_answered_once(writer: SqliteWriter, jobs: int) -> None:
    stats = writer.statistics()
    assert stats.jobs == jobs
    assert (stats.jobs_in_flight, stats.tasks_waiting) == (0, 0)
    # Each answer gives back one room: a job answered twice would show here.
    assert writer._room.value == writer._queue_size


def assert_unavailable(outcome: object, *, stored: bool | None) -> None:
    assert isinstance(outcome, StoreUnavailable), outcome
    assert outcome.stored is stored
    assert isinstance(outcome.__cause__, WriterBug)


async def assert_refused_at_once(writer: SqliteWriter) -> None:
    with trio.fail_after(1):
        with pytest.raises(StoreUnavailable, match="refused, nothing of it is stored") as caught:
            await writer.run("late", insert("late"))
    assert caught.value.stored is False
    assert writer.statistics().jobs_in_flight == 0


async def test_a_writer_dead_in_hand_back_answers_every_waiter_and_refuses_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "w.db"
    outcomes: dict[str, object] = {}

    async def attempt(name: str) -> None:
        outcomes[name] = await outcome_of(writer, name, insert(name))

    def broken_hand_back(*args: object) -> None:
        raise WriterBug("bug in _hand_back")

    with trio.fail_after(10):
        async with writer_on(path, queue_size=8) as writer:
            async with trio.open_nursery() as nursery:
                gate = Gate()
                await gate.hold(writer, nursery)
                monkeypatch.setattr(writer, "_hand_back", broken_hand_back)
                for index in range(12):  # 7 queued behind the gate, 5 waiting for room
                    nursery.start_soon(attempt, f"v{index}")
                await trio.testing.wait_all_tasks_blocked()
                assert writer.statistics().tasks_waiting == 5
                gate.open()
            await assert_refused_at_once(writer)
        assert not writer.thread.is_alive()

    # The gate's batch committed before the thread died: its caller was answered (no
    # exception), and nothing else ran.
    assert len(outcomes) == 12
    for outcome in outcomes.values():
        assert_unavailable(outcome, stored=False)
    assert rows(path) == {}
    assert_all_answered_once(writer, jobs=8)  # the gate and the 7 queued
    assert writer.statistics().failed_jobs == 7
    assert any(
        r.levelname == "CRITICAL" and "writer thread died" in r.getMessage() for r in caplog.records
    )


async def kill_behind_gate(
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    attribute: str,
    replacement: Callable[[SqliteWriter], object],
    *,
    jobs: int,
) -> tuple[SqliteWriter, list[object]]:
    """Hold the writer with a gate, queue ``jobs`` inserts behind it, set the writer's
    ``attribute`` to ``replacement(writer)`` (which kills the thread), open the gate and check
    that a later write is refused at once; returns the closed writer and each job's outcome."""
    outcomes: list[object] = []

    async def attempt(index: int) -> None:
        outcomes.append(await outcome_of(writer, "insert", insert(f"v{index}")))

    with trio.fail_after(10):
        async with writer_on(path) as writer:
            async with trio.open_nursery() as nursery:
                gate = Gate()
                await gate.hold(writer, nursery)
                monkeypatch.setattr(writer, attribute, replacement(writer))
                for index in range(jobs):
                    nursery.start_soon(attempt, index)
                await trio.testing.wait_all_tasks_blocked()
                gate.open()
            await assert_refused_at_once(writer)
    return writer, outcomes


async def test_jobs_a_dying_thread_took_from_the_queue_are_still_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread dies after taking jobs from its queue, before they reach its backlog."""
    path = tmp_path / "w.db"

    class LosingQueue:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def put(self, item: object) -> None:
            self.inner.put(item)  # type: ignore[attr-defined]

        def get(self) -> object:
            self.inner.get()  # type: ignore[attr-defined]
            raise WriterBug("bug in taking from the queue")

        def get_nowait(self) -> object:
            return self.inner.get_nowait()  # type: ignore[attr-defined]

    # The thread answers the gate, takes the 3, and dies.
    writer, outcomes = await kill_behind_gate(
        path, monkeypatch, "_queue", lambda writer: LosingQueue(writer._queue), jobs=3
    )

    assert len(outcomes) == 3
    for outcome in outcomes:
        assert_unavailable(outcome, stored=False)
    assert rows(path) == {}
    assert_all_answered_once(writer, jobs=4)


async def test_a_writer_dead_inside_a_batch_says_the_outcome_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.db"

    def broken_run_batch(batch: object) -> None:
        raise WriterBug("bug escaping _run_batch")

    # The 5 are the next batch after the gate's, the one the thread dies in.
    writer, outcomes = await kill_behind_gate(
        path, monkeypatch, "_run_batch", lambda writer: broken_run_batch, jobs=5
    )

    assert len(outcomes) == 5
    for outcome in outcomes:
        assert_unavailable(outcome, stored=None)
        assert "whether it committed is unknown" in str(outcome)
    assert rows(path) == {}
    assert_all_answered_once(writer, jobs=6)


async def test_a_writer_dead_after_a_commit_still_reports_what_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs whose transaction ended before the thread died get their real answer."""
    path = tmp_path / "w.db"
    outcomes: dict[str, object] = {}

    def refused(conn: sqlite3.Connection) -> None:
        raise ValueError("refused")

    async def attempt(name: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        outcomes[name] = await outcome_of(writer, name, fn)

    with trio.fail_after(10):
        async with writer_on(path) as writer:
            real_run_batch = writer._run_batch

            def run_batch_then_fail(batch: list[Any]) -> object:
                real_run_batch(batch)  # type: ignore[arg-type]
                raise WriterBug("bug after the COMMIT")

            async with trio.open_nursery() as nursery:
                gate = Gate()
                await gate.hold(writer, nursery)
                monkeypatch.setattr(writer, "_run_batch", run_batch_then_fail)
                for name, fn in [("a", insert("a")), ("refused", refused), ("b", insert("b"))]:
                    nursery.start_soon(attempt, name, fn)
                    await trio.testing.wait_all_tasks_blocked()
                gate.open()
            await assert_refused_at_once(writer)

    assert isinstance(outcomes["refused"], ValueError)
    assert rows(path) == {outcomes["a"]: "a", outcomes["b"]: "b"}
    assert_all_answered_once(writer, jobs=4)
    assert writer.statistics().failed_jobs == 1


async def test_a_cancelled_waiter_of_a_dead_writer_is_answered_and_closing_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.db"
    outcomes: list[object] = []

    def broken_hand_back(*args: object) -> None:
        raise WriterBug("bug in _hand_back")

    async def attempt_then_cancel(scope: trio.CancelScope) -> None:
        with scope:
            outcomes.append(await outcome_of(writer, "insert", insert("v")))

    with trio.fail_after(10):
        async with writer_on(path) as writer, trio.open_nursery() as nursery:
            gate = Gate()
            await gate.hold(writer, nursery)
            monkeypatch.setattr(writer, "_hand_back", broken_hand_back)
            scope = trio.CancelScope()
            nursery.start_soon(attempt_then_cancel, scope)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # the caller keeps waiting for its answer
            await trio.sleep(0.05)
            assert outcomes == []
            gate.open()
            # Leaving the blocks closes the writer while its thread dies.
        assert not writer.thread.is_alive()

    assert len(outcomes) == 1
    assert_unavailable(outcomes[0], stored=False)


async def test_a_dead_writer_is_reported_by_the_stores_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Stores.problems`` names the database whose writer died (``/healthz`` shows it);
    the other databases keep serving."""
    with trio.fail_after(10):
        async with open_sqlite_stores(tmp_path / "data") as stores:
            assert stores.problems() == []
            writer = stores.cross._writer  # type: ignore[attr-defined]

            def broken_hand_back(*args: object) -> None:
                raise WriterBug("bug in _hand_back")

            monkeypatch.setattr(writer, "_hand_back", broken_hand_back)
            # Committed before the thread died: reported as such; the next is refused.
            first = await stores.cross.append(message("g:1", 1))
            assert first.entry.seq == 1
            with pytest.raises(StoreUnavailable):
                await stores.cross.append(message("g:1", 2))
            assert stores.problems() == ["the writer of cross.db stopped; writes to it are refused"]
            await stores.personal.create_user(phone="+15550009", display_name="p", now=NOW)
