"""The writer of one SQLite database: one thread, one connection, group commit.

SQLite takes one writer at a time, and with ``synchronous=FULL`` every COMMIT waits for the
disk. So every write to a database goes through one dedicated thread that owns the write
connection (what aiosqlite does inside, but trio-native). The thread takes every job waiting,
up to ``max_batch``, and runs them in one ``BEGIN IMMEDIATE`` transaction, each job inside its
own SAVEPOINT, then COMMITs once: one disk flush pays for the whole batch. A job that raises
rolls back only its savepoint and gets its exception; the others commit.

Guarantees, for a caller of ``SqliteWriter.run``:

* The awaiting task resumes only after the COMMIT that holds its job returned: acknowledged
  means durable under the database's ``synchronous`` setting.
* If the job raised, or COMMIT failed, or SQLite aborted the whole transaction (it does for
  SQLITE_FULL and I/O errors), nothing of the job is stored and the caller gets an exception:
  ``StorageFull`` when the disk or the database (``max_page_count``) is full.
* Cancellation: a caller cancelled before its job is queued stores nothing. Once queued, the
  job runs and the caller waits for its answer whatever happens: a cancellation then is
  delivered at the caller's next checkpoint, after ``run`` has returned the result (or raised
  the job's error). So a caller always learns whether its write committed, and can finish
  what must follow a commit (publishing a stored message) without a shielded cancel scope of
  its own (~7 us per request). The wait is short: the jobs queued ahead, at most
  ``queue_size``. The writer is not disturbed by cancellations.
* Backpressure (house habit 6): at most ``queue_size`` jobs are queued or running; further
  callers wait in ``run`` until a batch is answered. Nobody is dropped.
* Jobs reach the thread once per scheduler tick: the first caller of a tick lets the other
  tasks of that tick queue theirs, then hands them all over with one wake-up of the thread
  (waking it per job made it take small batches and contend for the GIL per job).
* Results go back to trio with one ``TrioToken.run_sync_soon`` call per batch, which wakes
  every waiter of that batch, not one wake-up per row.
* If the thread dies (a bug outside a batch's own error handling), its exception is logged
  and no waiter is left hanging: every job not answered yet is answered at once with what
  is known of it (committed, failed), or ``StoreUnavailable``: ``stored=False`` for a job
  never run, ``stored=None`` for the jobs of the transaction it died in (their COMMIT's
  outcome is unknown). Every later ``run`` raises ``StoreUnavailable`` without queueing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio

from storage.errors import StorageFull, StoreClosed, StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Jobs one transaction takes at most: bounds how long one COMMIT makes its first job wait.
DEFAULT_MAX_BATCH = 256
#: Jobs queued or running at most before callers wait (backpressure).
DEFAULT_QUEUE_SIZE = 1024
#: A transaction slower than this is logged with the names of its jobs.
SLOW_TRANSACTION_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """A snapshot of a writer's counters (trio's ``statistics()`` convention)."""

    #: Jobs accepted and not yet answered (queued or running).
    jobs_in_flight: int
    #: Callers waiting for room in the queue (backpressure).
    tasks_waiting: int
    #: Batches answered, and transactions committed (a batch is one transaction unless
    #: SQLite aborted one midway, see ``SqliteWriter``).
    batches: int
    commits: int
    #: Jobs answered, and how many of them got an exception.
    jobs: int
    failed_jobs: int
    #: Transactions that failed as a whole (BEGIN, COMMIT, or aborted by SQLite).
    failed_transactions: int
    largest_batch: int


class _Job(Generic[T]):
    """One named transaction body, and what came of it."""

    __slots__ = ("answered", "committed", "error", "fn", "name", "result", "waiter")

    def __init__(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.name = name
        self.fn = fn
        #: Meaningful only when ``error`` is None once the job is answered.
        self.result: T
        self.error: BaseException | None = None
        self.committed = False
        #: Set in the trio thread once the batch holding this job is answered.
        self.answered = False
        #: The caller's task while it waits for the answer (rescheduled by ``_answer``).
        self.waiter: trio.lowlevel.Task | None = None


@dataclass(slots=True)
class _BatchReport:
    commits: int = 0
    failed_transactions: int = 0


class SqliteWriter:
    """Runs named write transactions on one connection in one dedicated thread.

    Use ``open_writer``; the connection becomes the thread's, and is closed by it.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        name: str,
        max_batch: int = DEFAULT_MAX_BATCH,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self._conn = conn
        self._name = name
        self._max_batch = max_batch
        self._queue_size = queue_size
        # The queue itself is unbounded: ``_room`` bounds it, so callers wait in trio
        # instead of blocking the trio thread on a full ``queue.Queue``.
        self._queue: queue.SimpleQueue[list[_Job[Any]] | None] = queue.SimpleQueue()
        #: Jobs queued in this scheduler tick, not yet handed to the thread (``run``).
        self._pending: list[_Job[Any]] = []
        self._room = trio.Semaphore(queue_size)
        self._closing = False
        #: Every job accepted and not answered yet, in order (failed if the thread dies).
        self._unanswered: dict[_Job[Any], None] = {}
        #: Set in the trio thread once the writer thread died: ``run`` refuses every job.
        self._death: BaseException | None = None
        #: The batch the thread is running: if the thread dies in it, its jobs' outcome is
        #: unknown (only the writer thread uses it).
        self._in_doubt: list[_Job[Any]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"rivet-sqlite-writer[{name}]"
        )
        # Counters, changed only in the trio thread (in ``_answer``).
        self._batches = 0
        self._commits = 0
        self._jobs = 0
        self._failed_jobs = 0
        self._failed_transactions = 0
        self._largest_batch = 0

    @property
    def thread(self) -> threading.Thread:
        """The writer thread (tests check that it is gone after closing)."""
        return self._thread

    async def run(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a transaction named ``name``; return what it returned
        once that transaction committed, or raise what it raised (nothing stored).

        ``fn`` runs in the writer thread: it must only use the connection it is given and
        must not begin, commit or roll back. ``StoreClosed`` once the writer is closing,
        ``StoreUnavailable`` once its thread died (see the module docstring). Cancelled
        after the job was queued, the job may still commit.
        """
        # Room is usually free: take it without a trip through the scheduler.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._room.acquire_nowait()
        except trio.WouldBlock:
            await self._room.acquire()
        if self._closing or self._death is not None:
            self._room.release()
            if self._death is not None:
                raise StoreUnavailable(
                    f"{name}: the writer of the {self._name} database stopped; this write"
                    " was refused, nothing of it is stored",
                    stored=False,
                ) from self._death
            raise StoreClosed(f"the {self._name} database is closed")
        job = _Job(name, fn)
        self._unanswered[job] = None
        pending = self._pending
        pending.append(job)
        if len(pending) == 1:
            # The first job of this scheduler tick: the other tasks running in it queue
            # theirs meanwhile, then the writer thread gets them all with one wake-up.
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._hand_over()
        if not job.answered:  # (answered during that checkpoint: ``_close`` handed it
            # over and the thread answered it, or the thread died)
            # Queued: wait for the answer even if cancelled (see the module docstring);
            # ``_answer`` reschedules this task. No checkpoint since the check above.
            job.waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(_keep_waiting)
        if job.error is not None:
            error, job.error = job.error, None  # no cycle through the traceback
            raise error
        return job.result

    def _hand_over(self) -> None:
        """Pass the jobs queued in trio to the writer thread, in order."""
        if self._pending:
            jobs, self._pending = self._pending, []
            self._queue.put(jobs)

    @property
    def died(self) -> bool:
        """The thread died of a bug: every write is refused (``StoreUnavailable``)."""
        return self._death is not None

    @property
    def commits(self) -> int:
        """Transactions committed so far (an int read: safe from another thread, which is
        how the checkpointer polls it)."""
        return self._commits

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            jobs_in_flight=self._queue_size - self._room.value,
            tasks_waiting=self._room.statistics().tasks_waiting,
            batches=self._batches,
            commits=self._commits,
            jobs=self._jobs,
            failed_jobs=self._failed_jobs,
            failed_transactions=self._failed_transactions,
            largest_batch=self._largest_batch,
        )

    def _start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()

    async def _close(self) -> None:
        """Refuse new jobs, let the thread finish every queued one, and join it."""
        if not self._closing:
            self._closing = True
            # FIFO: every job queued before this line runs before the thread sees the stop.
            self._hand_over()
            self._queue.put(None)
        # Not abandoned on cancel: the thread is always joined (no orphan threads).
        await trio.to_thread.run_sync(self._thread.join)

    # --- in the writer thread ---------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            try:
                self._serve()
            finally:
                # Also rolls back the transaction the thread may have died in.
                self._conn.close()
        except BaseException as exc:
            logger.critical(
                "%s: the writer thread died; failing every write not answered and refusing"
                " later ones",
                self._name,
                exc_info=exc,
            )
            assert self._token is not None
            # After every batch already handed back (``run_sync_soon`` keeps the order).
            # If trio is gone, so is every waiter: nobody to answer.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._thread_died, exc, self._in_doubt)

    def _serve(self) -> None:
        """Run every job queued until the stop, one batch at a time. Returns once every job
        taken was handed back, after the stop."""
        backlog: deque[_Job[Any]] = deque()
        stopping = False
        while True:
            if not backlog:
                if stopping:
                    break
                jobs = self._queue.get()
                if jobs is None:
                    break
                backlog.extend(jobs)
            # Everything else already queued, up to a batch.
            while not stopping and len(backlog) < self._max_batch:
                try:
                    jobs = self._queue.get_nowait()
                except queue.Empty:
                    break
                if jobs is None:
                    stopping = True
                else:
                    backlog.extend(jobs)
            batch = [backlog.popleft() for _ in range(min(len(backlog), self._max_batch))]
            self._in_doubt = batch
            report = self._run_batch(batch)
            self._in_doubt = []
            self._hand_back(batch, report)

    def _run_batch(self, batch: list[_Job[Any]]) -> _BatchReport:
        report = _BatchReport()
        started = time.monotonic()
        pending = batch
        try:
            while pending:
                pending = self._run_transaction(pending, report)
        except BaseException as exc:  # a bug here must not leave waiters hanging
            logger.exception("writer of %s failed a batch", self._name)
            for job in batch:
                if not job.committed and job.error is None:
                    job.error = _shared_error(exc, job.name)
            self._roll_back()
        elapsed = time.monotonic() - started
        if elapsed > SLOW_TRANSACTION_SECONDS:
            logger.warning(
                "%s: a batch of %d jobs took %.2fs (%s)",
                self._name,
                len(batch),
                elapsed,
                ", ".join(sorted({job.name for job in batch})),
            )
        return report

    def _run_transaction(self, jobs: list[_Job[Any]], report: _BatchReport) -> list[_Job[Any]]:
        """Run ``jobs`` in one transaction. Returns the jobs not run yet because SQLite
        aborted the transaction midway (they go into the next one)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            report.failed_transactions += 1
            for job in jobs:
                job.error = _shared_error(exc, job.name)
            return []
        succeeded: list[_Job[Any]] = []
        for index, job in enumerate(jobs):
            try:
                conn.execute("SAVEPOINT job")
                result = job.fn(conn)
                conn.execute("RELEASE job")
            except BaseException as exc:
                job.error = _own_error(exc, job.name)
                if conn.in_transaction and self._roll_back_savepoint():
                    continue
                # SQLite rolled back the whole transaction (it does for SQLITE_FULL and I/O
                # errors): the jobs that had succeeded in it are lost with it.
                report.failed_transactions += 1
                self._roll_back()
                for lost in succeeded:
                    lost.error = _shared_error(exc, lost.name)
                return jobs[index + 1 :]
            job.result = result
            succeeded.append(job)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Every job of the transaction gets the error: none of them was stored.
            report.failed_transactions += 1
            self._roll_back()
            for job in succeeded:
                job.error = _shared_error(exc, job.name)
            return []
        for job in succeeded:
            job.committed = True
        report.commits += 1
        return []

    def _roll_back_savepoint(self) -> bool:
        try:
            self._conn.execute("ROLLBACK TO job")
            self._conn.execute("RELEASE job")
        except sqlite3.Error:
            return False
        return True

    def _roll_back(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("%s: ROLLBACK failed", self._name)

    def _hand_back(self, batch: list[_Job[Any]], report: _BatchReport) -> None:
        assert self._token is not None
        # If trio is gone, so is every waiter: nobody to answer.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._answer, batch, report)

    # --- back in the trio thread --------------------------------------------------------------

    def _answer(self, batch: list[_Job[Any]], report: _BatchReport) -> None:
        """Wake every waiter of one batch and give back its room in the queue."""
        self._batches += 1
        self._commits += report.commits
        self._failed_transactions += report.failed_transactions
        self._jobs += len(batch)
        self._largest_batch = max(self._largest_batch, len(batch))
        for job in batch:
            self._settle(job)

    def _settle(self, job: _Job[Any]) -> None:
        """Answer one job: wake its waiter and give back its room in the queue."""
        if job.answered:  # never twice (``_thread_died`` may have answered it)
            return
        if job.error is not None:
            self._failed_jobs += 1
        job.answered = True
        del self._unanswered[job]
        if job.waiter is not None:
            trio.lowlevel.reschedule(job.waiter)
        self._room.release()

    def _thread_died(self, exc: BaseException, in_doubt: list[_Job[Any]]) -> None:
        """Answer every job not answered yet, and refuse every later one.

        A job whose transaction ended (committed, or failed: nothing of it stored) gets its
        real answer; one of the transaction the thread died in, ``StoreUnavailable`` with
        ``stored=None``; one never run, with ``stored=False``.
        """
        self._death = exc
        self._pending = []  # answered below: nothing to hand over to a dead thread
        doubtful = {id(job) for job in in_doubt}
        jobs = list(self._unanswered)
        for job in jobs:
            if job.committed or job.error is not None:
                continue
            if id(job) in doubtful:
                message = (
                    f"{job.name}: the writer of the {self._name} database stopped during"
                    " this write's transaction; whether it committed is unknown"
                )
                job.error = StoreUnavailable(message, stored=None)
            else:
                message = (
                    f"{job.name}: the writer of the {self._name} database stopped; this"
                    " write was not run, nothing of it is stored"
                )
                job.error = StoreUnavailable(message, stored=False)
            job.error.__cause__ = exc
        self._jobs += len(jobs)
        for job in jobs:
            self._settle(job)


def _keep_waiting(_: object) -> trio.lowlevel.Abort:
    """A queued job's caller is not woken by a cancellation: it waits for its answer."""
    return trio.lowlevel.Abort.FAILED


def _is_full(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # the extended code; its low byte is primary
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def _full(exc: BaseException, name: str) -> StorageFull:
    error = StorageFull(f"{name}: the database or disk is full; nothing was stored")
    error.__cause__ = exc
    return error


def _own_error(exc: BaseException, name: str) -> BaseException:
    """What the caller of a job that raised ``exc`` gets."""
    return _full(exc, name) if _is_full(exc) else exc


def _shared_error(exc: BaseException, name: str) -> BaseException:
    """What each caller of a job lost with its whole transaction gets: its own exception
    object (one instance raised in several tasks would collect all their tracebacks)."""
    if _is_full(exc):
        return _full(exc, name)
    error = copy.copy(exc)
    error.__cause__ = exc
    return error


@asynccontextmanager
async def open_writer(
    conn: sqlite3.Connection,
    *,
    name: str,
    max_batch: int = DEFAULT_MAX_BATCH,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> AsyncIterator[SqliteWriter]:
    """Start the writer thread on ``conn``. On exit: refuse new jobs, run every queued one,
    stop and join the thread, close the connection (even when cancelled)."""
    try:
        writer = SqliteWriter(conn, name=name, max_batch=max_batch, queue_size=queue_size)
        writer._start()
    except BaseException:
        conn.close()  # no thread took it over
        raise
    try:
        yield writer
    finally:
        with trio.CancelScope(shield=True):
            await writer._close()
