"""The readers of one SQLite database: a small pool of read-only connections.

In WAL mode readers never wait for the writer, nor it for them. Each read runs in a worker
thread (``trio.to_thread.run_sync``) on a connection of its own, inside one read transaction
so every statement of it sees the same snapshot. A ``CapacityLimiter`` with one token per
connection bounds the threads, so a connection is used by one thread at a time. A cancelled
read finishes its statement first (the thread is never abandoned), then raises ``Cancelled``.
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from storage.errors import StoreClosed

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReaderStatistics:
    connections: int
    #: Reads running now, and reads waiting for a connection.
    reads_running: int
    tasks_waiting: int


class ReaderPool:
    """Runs named read transactions on a pool of connections. Use ``open_readers``."""

    def __init__(self, connections: Sequence[sqlite3.Connection], *, name: str) -> None:
        if not connections:
            raise ValueError("a reader pool needs at least one connection")
        self._name = name
        self._connections = list(connections)
        # Taken and given back in worker threads: a thread-safe queue. It is never empty
        # when taken from, because the limiter has one token per connection.
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for conn in self._connections:
            self._idle.put(conn)
        self._limiter = trio.CapacityLimiter(len(self._connections))
        self._closed = False

    async def run(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a read transaction named ``name`` and return its result.

        ``fn`` runs in a worker thread and must only read. ``StoreClosed`` once closed.
        """
        return await trio.to_thread.run_sync(self._read, fn, limiter=self._limiter)

    async def run_inline(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run`` for a lookup by key: ``fn`` runs here, in the trio thread, on an idle
        connection of the pool (a thread hop costs far more CPU than such a read: a wake-up
        and a GIL hand-over each way). Only for reads that touch a handful of rows through
        an index, so the event loop is held up for microseconds; in WAL mode a reader never
        waits for the writer. With every connection busy in threads it falls back to
        ``run``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._limiter.acquire_on_behalf_of_nowait(fn)
        except trio.WouldBlock:
            return await self.run(name, fn)
        try:
            return self._read(fn)
        finally:
            self._limiter.release_on_behalf_of(fn)

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


@asynccontextmanager
async def open_readers(
    connections: Sequence[sqlite3.Connection], *, name: str
) -> AsyncIterator[ReaderPool]:
    """A pool over ``connections`` (opened with ``check_same_thread=False``); closes them on
    exit, after the reads running then have finished."""
    pool = ReaderPool(connections, name=name)
    try:
        yield pool
    finally:
        with trio.CancelScope(shield=True):
            await pool._close()
