"""Load worker processes and the control channel between them and the orchestrator.

The orchestrator (the ``python -m bench`` process) starts one process per ``WorkerSpec``
(``multiprocessing``, *spawn* start method). Each worker pins itself to the load CPUs,
lifts its open-file limit and runs a *workload*, ``async def fn(ctx: WorkerContext) ->
dict``, named by ``"module:function"`` so that the worker imports it itself. A workload
drives its WebSocket clients under ``trio.run`` and talks to the orchestrator with
``ctx.send(kind, **fields)`` and ``await ctx.recv(kind)``; what it returns goes back as the
worker's result, together with the latencies it recorded in ``ctx.recorder``.

The orchestrator side, ``LoadRun``, is a context manager that starts the workers and offers
``send``, ``wait`` (for one kind of message from a set of workers) and ``pump_until`` (keep
reading progress reports until a moment); on exit it tells every worker to abort and ends
any that do not, by their own pid. A scenario scripts the exchange (see ``bench.patterns``).

Times are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process on Linux,
so a timestamp taken in one process can be subtracted from one taken in another.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from bench.baseline.common import raise_nofile_limit

Workload = Callable[["WorkerContext"], Awaitable[dict[str, Any]]]
PROGRESS_INTERVAL = 0.25
#: Middle-generation collections between chances of a full one in the workers (CPython: 10).
LOAD_GC_OLD_THRESHOLD = 100


class WorkerFailed(RuntimeError):
    """A worker raised, died, or did not answer in time."""


class Aborted(Exception):
    """The orchestrator told the worker to stop."""


@dataclass(frozen=True)
class WorkerSpec:
    """One load worker: which workload it runs against which URL, with what parameters."""

    index: int
    role: str
    workload: str
    url: str
    params: Mapping[str, Any] = field(default_factory=dict)
    cpus: tuple[int, ...] | None = None
    # Extra channels between workers (``multiprocessing.Pipe`` ends, or lists of them),
    # handed over when the worker starts; the orchestrator closes its own copies then.
    links: Mapping[str, Any] = field(default_factory=dict)


class Recorder:
    """Latency samples of one worker: when each was sent and when it arrived (ns)."""

    def __init__(self) -> None:
        self.sent = array("q")
        self.received = array("q")

    def record(self, sent_ns: int, received_ns: int) -> None:
        self.sent.append(sent_ns)
        self.received.append(received_ns)

    def __len__(self) -> int:
        return len(self.sent)


class WorkerContext:
    """What a workload sees: its spec, the control channel, a recorder, a progress counter."""

    def __init__(self, spec: WorkerSpec, conn: multiprocessing.connection.Connection) -> None:
        self.spec = spec
        self.params = spec.params
        self.recorder = Recorder()
        self._conn = conn
        self._progress = 0
        self._reported = 0

    @property
    def url(self) -> str:
        return self.spec.url

    def send(self, kind: str, **fields: Any) -> None:
        self._conn.send((kind, fields))

    async def recv(self, kind: str) -> dict[str, Any]:
        """Wait for the orchestrator's next message, which must be of ``kind``."""
        while not self._conn.poll():
            await trio.lowlevel.wait_readable(self._conn.fileno())
        got, fields = self._conn.recv()
        if got == "abort":
            raise Aborted
        if got != kind:
            raise WorkerFailed(f"worker {self.spec.index} expected {kind!r}, got {got!r}")
        return dict(fields)

    def count(self, n: int = 1) -> None:
        """Count units of work done, for the progress bar."""
        self._progress += n

    async def _report_progress(self) -> None:
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            self._flush_progress()

    def _flush_progress(self) -> None:
        if self._progress != self._reported:
            self.send("progress", done=self._progress - self._reported)
            self._reported = self._progress


def resolve(name: str) -> Workload:
    module, _, attr = name.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"{name} is not callable")
    return fn  # type: ignore[no-any-return]


async def _worker_main(fn: Workload, ctx: WorkerContext) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ctx._report_progress)
        result = await fn(ctx)
        nursery.cancel_scope.cancel()
    ctx._flush_progress()
    return result


async def sleep_until_ns(deadline_ns: int) -> None:
    """Sleep until ``time.monotonic_ns()`` reaches ``deadline_ns``."""
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    await trio.sleep(max(delay, 0.0))


def _worker_entry(spec: WorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    try:
        if spec.cpus is not None:
            os.sched_setaffinity(0, spec.cpus)
        raise_nofile_limit()
        # Thousands of clients in one process keep a large heap: with CPython's settings
        # the collector was about half the device worker's CPU in a 5,000-device storm,
        # mostly full collections (server.collector says more; the server spaces them out
        # the same way). Every workload, bare or Rivet, runs so.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, LOAD_GC_OLD_THRESHOLD)
        ctx = WorkerContext(spec, conn)
        result = trio.run(_worker_main, resolve(spec.workload), ctx)
        rec = ctx.recorder
        conn.send(("result", {"result": result, "sent": rec.sent, "received": rec.received}))
    except BaseException as exc:
        if _only(exc, Aborted):
            conn.send(("aborted", {}))
        else:
            conn.send(("error", {"traceback": traceback.format_exc()}))
    finally:
        conn.close()


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """``exc`` is ``kind``, or an exception group of nothing but ``kind``."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


class LoadRun:
    """Starts the workers, exchanges control messages with them, and ends them."""

    def __init__(
        self,
        specs: Iterable[WorkerSpec],
        on_progress: Callable[[int], None] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.specs = list(specs)
        self.progress = 0
        self._on_progress = on_progress
        self._start_timeout = start_timeout
        self._mp = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._conns: list[multiprocessing.connection.Connection] = []
        self._pending: list[dict[str, tuple[str, dict[str, Any]]]] = []
        self._delivered: list[set[str]] = []
        self._closed: set[int] = set()

    @property
    def indices(self) -> list[int]:
        return [spec.index for spec in self.specs]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.pid is not None]

    def by_role(self, role: str) -> list[int]:
        return [spec.index for spec in self.specs if spec.role == role]

    def __enter__(self) -> LoadRun:
        for position, spec in enumerate(self.specs):
            if spec.index != position:
                raise ValueError("worker indices must be 0, 1, 2, ... in order")
            parent, child = self._mp.Pipe()
            proc = self._mp.Process(
                target=_worker_entry,
                args=(spec, child),
                name=f"bench-{spec.role}-{spec.index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
            self._pending.append({})
            self._delivered.append(set())
        for spec in self.specs:
            for link in spec.links.values():
                for end in link if isinstance(link, list | tuple) else [link]:
                    end.close()
        return self

    def __exit__(self, *exc: object) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    conn.send(("abort", {}))
        deadline = time.monotonic() + 10.0
        for proc in self._procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM to this worker's own pid
                proc.join(3.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()

    def send(self, indices: Iterable[int], kind: str, **fields: Any) -> None:
        for i in indices:
            self._conns[i].send((kind, fields))

    def _handle(self, i: int) -> None:
        try:
            kind, fields = self._conns[i].recv()
        except (EOFError, OSError) as exc:
            self._closed.add(i)
            if "result" in self._pending[i] or "result" in self._delivered[i]:
                return  # a worker that has delivered its result exits
            self._procs[i].join(1.0)
            raise WorkerFailed(
                f"worker {i} ({self.specs[i].role}) exited (status {self._procs[i].exitcode}, "
                f"{exc!r})"
            ) from None
        if kind == "progress":
            self.progress += fields["done"]
            if self._on_progress is not None:
                self._on_progress(self.progress)
        elif kind == "error":
            raise WorkerFailed(f"worker {i} ({self.specs[i].role}) failed:\n{fields['traceback']}")
        elif kind in self._pending[i]:
            raise WorkerFailed(f"worker {i} sent {kind!r} twice")
        else:
            self._pending[i][kind] = (kind, fields)

    def _poll(self, indices: Iterable[int], timeout: float) -> None:
        """Handle what the given workers have sent, waiting at most ``timeout`` seconds."""
        conns = [self._conns[i] for i in indices if i not in self._closed]
        if not conns:
            time.sleep(max(timeout, 0.0))
            return
        for conn in multiprocessing.connection.wait(conns, max(timeout, 0.0)):
            self._handle(self._conns.index(conn))  # type: ignore[arg-type]

    def wait(self, indices: Iterable[int], kind: str, timeout: float) -> dict[int, dict[str, Any]]:
        """Wait until each of ``indices`` has sent a ``kind`` message; returns their fields."""
        want = list(indices)
        deadline = time.monotonic() + timeout
        while True:
            missing = [i for i in want if kind not in self._pending[i]]
            if not missing:
                out = {}
                for i in want:
                    out[i] = self._pending[i].pop(kind)[1]
                    self._delivered[i].add(kind)
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed(f"workers {missing} sent no {kind!r} within {timeout:g} s")
            self._poll(missing, left)

    def pump_until(self, deadline_ns: int) -> None:
        """Keep handling progress reports until ``time.monotonic_ns()`` reaches the deadline."""
        while True:
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                return
            self._poll(self.indices, left)

    def ready(self) -> None:
        """Wait for every worker's ``ready``."""
        self.wait(self.indices, "ready", self._start_timeout)

    def results(self, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
        """Tell every worker to close, then collect what each workload returned."""
        self.send(self.indices, "close")
        return self.wait(self.indices, "result", timeout)
