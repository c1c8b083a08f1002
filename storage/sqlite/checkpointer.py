"""WAL checkpoints off the commit path.

By default SQLite checkpoints inside the COMMIT that takes the write-ahead log past 1,000
pages: that commit, and every write queued behind it, waits while the log's pages are
copied into the database file and both are flushed. On the send path a message commits in
~10 log pages when batches are small, so at 1,500 messages a second one commit in a hundred
paid for a checkpoint, several milliseconds each: exactly the p99 of send-to-deliver.

Here the writer's own automatic checkpoint is raised to a backstop (``BACKSTOP_PAGES``), and
``run_checkpointer`` runs a PASSIVE checkpoint on a connection of its own, in a thread of
its own, every ``interval`` seconds while commits arrive. PASSIVE never waits for the writer
or for readers: it copies what it can and the writer goes on appending meanwhile. When a
checkpoint has copied the whole log, the writer's next transaction starts the log from its
beginning again, so the file stays small. If checkpoints ever fall behind (a reader holding
an old snapshot for long), the backstop checkpoints inside a commit, as SQLite would have.

Durability is unchanged: a commit is durable once its log frames are flushed
(``synchronous=FULL``); a checkpoint only moves committed pages into the main file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

logger = logging.getLogger(__name__)

#: Log pages after which the writer checkpoints inside a commit anyway (SQLite's default
#: is 1,000). 16,000 pages of 4 KiB: a 64 MiB log at most while the checkpointer is behind.
BACKSTOP_PAGES = 16_000
#: Seconds between checkpoints while the database is written to.
DEFAULT_INTERVAL = 0.2


def raise_automatic_checkpoint(conn: sqlite3.Connection) -> None:
    """Make ``conn`` (the writer's) checkpoint itself only past ``BACKSTOP_PAGES``."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """One PASSIVE checkpoint: (busy, frames in the log, frames copied), as SQLite reports."""
    busy, log_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(log_frames), int(copied)


class Checkpointer:
    """A thread that checkpoints ``conn`` every ``interval`` seconds while ``commits()`` (the
    writer's commit count) moves. A thread, like the writer, and not a trio task: it needs no
    nursery around the database's user, so their exceptions reach them unwrapped."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        commits: Callable[[], int],
        *,
        name: str,
        lock: threading.Lock,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._conn = conn
        self._commits = commits
        self._name = name
        #: Held while checkpointing. A TRUNCATE checkpoint elsewhere (after keys are
        #: destroyed: ``storage.sqlite.keys``) takes it too: SQLite answers a second
        #: checkpointer "busy" at once instead of waiting, and that TRUNCATE must not fail.
        self._lock = lock
        self._interval = interval
        self._stop = threading.Event()
        #: The commit count the last checkpoint covered; nothing to do while it holds.
        self._checkpointed_at = commits()
        self.thread = threading.Thread(target=self._main, name=f"rivet-sqlite-checkpointer[{name}]")

    def stop(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                seen = self._commits()
                if seen == self._checkpointed_at:
                    continue
                try:
                    with self._lock:
                        busy, log_frames, copied = checkpoint(self._conn)
                except sqlite3.Error:
                    # I/O trouble: the next round (or the backstop) retries.
                    logger.warning("%s: background checkpoint failed", self._name, exc_info=True)
                    continue
                except Exception:
                    # A bug must not end the thread and leave only the backstop.
                    logger.exception("%s: background checkpoint failed", self._name)
                    continue
                if not busy and copied == log_frames:
                    # Everything is copied; until the next commit there is nothing to do. A
                    # reader on an old snapshot can hold frames back: then try again.
                    self._checkpointed_at = seen
        finally:
            self._conn.close()


@asynccontextmanager
async def run_checkpointer(
    connect: Callable[[], sqlite3.Connection],
    commits: Callable[[], int],
    *,
    name: str,
    lock: threading.Lock,
    interval: float = DEFAULT_INTERVAL,
) -> AsyncIterator[Checkpointer]:
    """Checkpoint in the background while the block runs, on a connection from ``connect``
    (the checkpointer's thread closes it), holding ``lock`` while it checkpoints. On exit the
    checkpoint under way finishes and the thread is joined (no orphan threads)."""
    conn = await trio.to_thread.run_sync(connect)
    try:
        checkpointer = Checkpointer(conn, commits, name=name, lock=lock, interval=interval)
        checkpointer.thread.start()
    except BaseException:
        conn.close()  # no thread took it over
        raise
    try:
        yield checkpointer
    finally:
        checkpointer.stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(checkpointer.thread.join)
