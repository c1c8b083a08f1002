"""The readers of one SQLite database: a small pool of read-only connections.

In WAL mode readers never wait for the writer, nor it for them. Each read runs in a worker
thread (``trio.to_thread.run_sync``) on a connection of its own, inside one read transaction
so every statement of it sees the same snapshot. A ``CapacityLimiter`` with one token per
connection bounds the threads, so a connection is used by one thread at a time. A cancelled
read finishes its statement first (the thread is never abandoned), then raises ``Cancelled``.

Lookups by key (``run_inline``, ``lookup``) run on the trio thread instead, on a connection
of their own: the trio thread runs one of them at a time, to completion, so that connection
is never shared and needs no limiter token, and no thread hop is paid for a read of a few
microseconds.

Every other read (``run``) is tried there first too, on a time budget (``INLINE_BUDGET``):
most reads (a user's memberships, contacts, the conversations changed since a sync token,
a short page of entries) take less CPU than the thread hop that would carry them (a wake-up
and a GIL hand-over each way). A read that outruns its budget is interrupted by SQLite's
progress handler (only reads: nothing to undo, and the read transaction is rolled back) and
runs again in a worker thread; reads of the same name then go straight to a thread for the
next ``INLINE_BACKOFF`` calls, so a large read does not pay the budget every time. The event
loop is held up for at most about ``INLINE_BUDGET`` of the read's own CPU time per read: the
budget is the trio thread's CPU time (``time.thread_time``), not the wall clock, so a read
that only waited for the GIL (a writer thread took it while SQLite released it) or for the
CPU (another process) is not sent to a thread, where it would wait for both again and pay
the hop on top.
"""

from __future__ import annotations

import queue
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from storage.errors import StoreClosed

T = TypeVar("T")

#: How much CPU time a read may use on the trio thread before it is moved to a worker thread.
INLINE_BUDGET = 0.001
#: SQLite VM instructions between two looks at the clock (the progress handler).
_PROGRESS_STEPS = 500
#: Calls of a read's name that go straight to a thread after it outran the budget.
INLINE_BACKOFF = 64


@dataclass(frozen=True, slots=True)
class ReaderStatistics:
    connections: int
    #: Reads running now, and reads waiting for a connection.
    reads_running: int
    tasks_waiting: int


class ReaderPool:
    """Runs named read transactions on a pool of connections. Use ``open_readers``."""

    def __init__(
        self,
        connections: Sequence[sqlite3.Connection],
        *,
        name: str,
        inline: sqlite3.Connection | None = None,
    ) -> None:
        if not connections:
            raise ValueError("a reader pool needs at least one connection")
        self._name = name
        self._connections = list(connections)
        #: Only for reads on the trio thread (``run_inline``, ``lookup``); without it they
        #: borrow an idle pool connection.
        self._inline = inline
        # Taken and given back in worker threads: a thread-safe queue. It is never empty
        # when taken from, because the limiter has one token per connection.
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for conn in self._connections:
            self._idle.put(conn)
        self._limiter = trio.CapacityLimiter(len(self._connections))
        self._closed = False
        #: Per read name: calls left that go straight to a thread (``INLINE_BACKOFF``).
        self._threaded: dict[str, int] = {}
        #: Reads tried on the trio thread, and how many of them outran the budget.
        self.inline_reads = 0
        self.inline_overruns = 0

    async def run(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a read transaction named ``name`` and return its result.

        ``fn`` must only read (it may run twice: see the module docstring). It runs on the
        trio thread within ``INLINE_BUDGET``, else in a worker thread. ``StoreClosed`` once
        closed.
        """
        if self._inline is not None:
            left = self._threaded.get(name, 0)
            if left:
                if left == 1:
                    del self._threaded[name]
                else:
                    self._threaded[name] = left - 1
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                done, result = self._read_within_budget(self._inline, fn)
                if done:
                    return result  # type: ignore[return-value]
                self._threaded[name] = INLINE_BACKOFF
        return await self.run_in_thread(name, fn)

    async def run_in_thread(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run`` always in a worker thread (a read known to be long, or one that blocks)."""
        return await trio.to_thread.run_sync(self._read, fn, limiter=self._limiter)

    def _read_within_budget(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]
    ) -> tuple[bool, T | None]:
        """``(True, fn(conn))`` in a read transaction on the trio thread, or ``(False,
        None)`` if it outran ``INLINE_BUDGET`` (interrupted, rolled back)."""
        if self._closed:
            raise StoreClosed(f"the {self._name} database is closed")
        self.inline_reads += 1
        started_cpu = time.thread_time()
        deadline = time.perf_counter() + INLINE_BUDGET
        overran = False

        def progress() -> bool:
            nonlocal overran, deadline
            now = time.perf_counter()
            if now <= deadline:
                return False
            # The wall clock also runs while this thread waits for the GIL (held by a
            # writer or worker thread while SQLite released it) or for the CPU: only this
            # thread's own CPU time counts against the budget (a syscall, so only read
            # once the wall-clock deadline has passed).
            used = time.thread_time() - started_cpu
            if used <= INLINE_BUDGET:
                deadline = now + (INLINE_BUDGET - used)
                return False
            overran = True
            return True  # SQLite interrupts the statement

        conn.set_progress_handler(progress, _PROGRESS_STEPS)
        try:
            conn.execute("BEGIN")
            try:
                result = fn(conn)
            finally:
                conn.set_progress_handler(None, 0)
                conn.execute("ROLLBACK")
            if not overran:  # (a read that swallowed the interruption is not trusted)
                return True, result
        except sqlite3.OperationalError:
            if not overran:
                raise
        finally:
            conn.set_progress_handler(None, 0)
        self.inline_overruns += 1
        return False, None

    async def run_inline(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run`` for a lookup by key: ``fn`` runs here, in the trio thread, on an idle
        connection of the pool (a thread hop costs far more CPU than such a read: a wake-up
        and a GIL hand-over each way). Only for reads that touch a handful of rows through
        an index, so the event loop is held up for microseconds; in WAL mode a reader never
        waits for the writer. With every connection busy in threads it falls back to
        ``run``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        conn = self._inline
        if conn is not None:
            # The trio thread runs one read at a time to completion (``fn`` cannot await):
            # this connection is never shared.
            if self._closed:
                raise StoreClosed(f"the {self._name} database is closed")
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")
        try:
            self._limiter.acquire_on_behalf_of_nowait(fn)
        except trio.WouldBlock:
            return await self.run_in_thread(name, fn)
        try:
            return self._read(fn)
        finally:
            self._limiter.release_on_behalf_of(fn)

    async def lookup(
        self, name: str, sql: str, parameters: Sequence[object], row_to: Callable[[Any], T]
    ) -> T | None:
        """``row_to`` of the one row ``sql`` selects by a unique key, or None: a
        ``run_inline`` of one statement. One statement sees one snapshot on its own, so it
        runs without an explicit read transaction (SQLite begins and ends one around it; the
        statement runs to its end, so none is left open)."""
        conn = self._inline
        if conn is None:
            return await self.run_inline(name, lambda c: _one(c, sql, parameters, row_to))
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise StoreClosed(f"the {self._name} database is closed")
        return _one(conn, sql, parameters, row_to)

    def statistics(self) -> ReaderStatistics:
        limiter = self._limiter.statistics()
        return ReaderStatistics(
            connections=len(self._connections),
            reads_running=limiter.borrowed_tokens,
            tasks_waiting=limiter.tasks_waiting,
        )

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # In a worker thread, holding a limiter token.
        if self._closed:
            raise StoreClosed(f"the {self._name} database is closed")
        conn = self._idle.get_nowait()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")  # a read transaction: nothing to keep
        finally:
            self._idle.put(conn)

    async def _close(self) -> None:
        """Refuse new reads, wait for the running ones, close every connection."""
        self._closed = True
        borrowers = [object() for _ in self._connections]
        for borrower in borrowers:
            await self._limiter.acquire_on_behalf_of(borrower)
        try:
            # In a thread: the last connection of a database to close checkpoints the WAL.
            await trio.to_thread.run_sync(self._close_connections)
        finally:
            for borrower in borrowers:
                self._limiter.release_on_behalf_of(borrower)

    def _close_connections(self) -> None:
        for conn in self._connections:
            conn.close()
        if self._inline is not None:
            self._inline.close()


def _one(
    conn: sqlite3.Connection, sql: str, parameters: Sequence[object], row_to: Callable[[Any], T]
) -> T | None:
    rows = conn.execute(sql, parameters).fetchall()  # to the end: the statement is reset
    if len(rows) > 1:
        raise ValueError(f"a lookup selected {len(rows)} rows")
    return row_to(rows[0]) if rows else None


@asynccontextmanager
async def open_readers(
    connections: Sequence[sqlite3.Connection],
    *,
    name: str,
    inline: sqlite3.Connection | None = None,
) -> AsyncIterator[ReaderPool]:
    """A pool over ``connections`` (opened with ``check_same_thread=False``), with ``inline``
    for the reads on the trio thread; closes them on exit, after the reads running then have
    finished."""
    pool = ReaderPool(connections, name=name, inline=inline)
    try:
        yield pool
    finally:
        with trio.CancelScope(shield=True):
            await pool._close()
