"""One SQLite database file: its connections, migrations, writer thread and reader pool."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from storage.sqlite.checkpointer import (
    DEFAULT_INTERVAL,
    raise_automatic_checkpoint,
    run_checkpointer,
)
from storage.sqlite.migrations import migrate
from storage.sqlite.readers import ReaderPool, open_readers
from storage.sqlite.writer import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_SIZE, SqliteWriter, open_writer

#: SQLite's ``PRAGMA synchronous`` levels.
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

#: Milliseconds a connection waits for a lock another process holds before SQLITE_BUSY.
BUSY_TIMEOUT_SECONDS = 5.0
#: Prepared statements each connection keeps (the sqlite3 module's statement cache).
CACHED_STATEMENTS = 256


@dataclass(frozen=True, slots=True)
class DatabaseOptions:
    #: FULL: in WAL mode, a committed transaction survives power loss on honest disks.
    synchronous: str = "FULL"
    #: Caps the file at this many pages (SQLITE_FULL past it): lets tests fill a database.
    max_page_count: int | None = None
    readers: int = 4
    max_batch: int = DEFAULT_MAX_BATCH
    queue_size: int = DEFAULT_QUEUE_SIZE
    #: Seconds between background WAL checkpoints (``storage.sqlite.checkpointer``); None:
    #: SQLite's own, inside the commit that fills the log past 1,000 pages.
    checkpoint_interval: float | None = DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        if self.readers < 1:
            raise ValueError("readers must be at least 1")
        if self.max_page_count is not None and self.max_page_count < 1:
            raise ValueError("max_page_count must be positive")
        if self.checkpoint_interval is not None and not self.checkpoint_interval > 0:
            raise ValueError("checkpoint_interval must be positive (or None)")


@dataclass(frozen=True, slots=True)
class Database:
    """What a store is built on: named write transactions and named reads."""

    path: Path
    writer: SqliteWriter
    readers: ReaderPool
    #: Held by whoever checkpoints this file (``storage.sqlite.checkpointer``): take it
    #: around any other checkpoint of it, which SQLite would otherwise refuse as busy.
    checkpoint_lock: threading.Lock = field(default_factory=threading.Lock)


def connect(path: Path, options: DatabaseOptions, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from the one
    thread that owns it at a time."""
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=CACHED_STATEMENTS,
    )
    try:
        conn.execute(f"PRAGMA synchronous = {options.synchronous}")
        # Deleted content (recalls, erased accounts, dissolved organisations) is overwritten
        # in the file, not left in free pages; explicit because builds differ in the default.
        conn.execute("PRAGMA secure_delete = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare_writer(path: Path, domain: str, options: DatabaseOptions) -> sqlite3.Connection:
    conn = connect(path, options)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL mode (got {mode})")
        migrate(conn, domain, path=str(path))
        # Every job of the writer runs in a SAVEPOINT, whose statement journal otherwise goes
        # to a temporary file: ~8 pwrite calls per message (strace of a batch of 64 appends:
        # 33,547 pwrites for 3,200 messages, 6,547 with this). The journal only undoes a
        # savepoint inside a transaction (a crash is recovered from the WAL), so memory loses
        # nothing; it holds the pages one batch changes. Set after the migrations and on
        # this connection only: an index build or a reader's large sort keeps its temporary
        # b-trees on disk, not in memory.
        conn.execute("PRAGMA temp_store = MEMORY")
        if options.checkpoint_interval is not None:
            raise_automatic_checkpoint(conn)
        if options.max_page_count is not None:
            conn.execute(f"PRAGMA max_page_count = {int(options.max_page_count)}")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_readers(path: Path, options: DatabaseOptions) -> list[sqlite3.Connection]:
    """The pool's ``options.readers`` connections, and one more for lookups on the trio
    thread (``ReaderPool.run_inline``), last."""
    opened: list[sqlite3.Connection] = []
    try:
        for _ in range(options.readers + 1):
            opened.append(connect(path, options, read_only=True))
    except BaseException:
        for conn in opened:
            conn.close()
        raise
    return opened


@asynccontextmanager
async def open_database(
    path: Path, *, domain: str, options: DatabaseOptions
) -> AsyncIterator[Database]:
    """Open (creating and migrating it if needed) the ``domain`` database at ``path``.

    While it is open, WAL checkpoints run in the background (``checkpoint_interval``). On
    exit the checkpointer stops, the readers close (after the reads running then), then the
    writer finishes every queued write, its thread is joined and its connection, the last
    one, closes (which checkpoints the WAL in the writer thread).
    """
    writer_conn = await trio.to_thread.run_sync(_prepare_writer, path, domain, options)
    async with AsyncExitStack() as stack:
        # The writer thread owns writer_conn from here on and closes it when it stops.
        writer = await stack.enter_async_context(
            open_writer(
                writer_conn,
                name=path.name,
                max_batch=options.max_batch,
                queue_size=options.queue_size,
            )
        )
        reader_conns = await trio.to_thread.run_sync(_open_readers, path, options)
        readers = await stack.enter_async_context(
            open_readers(reader_conns[:-1], name=path.name, inline=reader_conns[-1])
        )
        checkpoint_lock = threading.Lock()
        if options.checkpoint_interval is not None:
            await stack.enter_async_context(
                run_checkpointer(
                    lambda: connect(path, options),
                    lambda: writer.commits,
                    name=path.name,
                    lock=checkpoint_lock,
                    interval=options.checkpoint_interval,
                )
            )
        yield Database(path=path, writer=writer, readers=readers, checkpoint_lock=checkpoint_lock)
