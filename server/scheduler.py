"""Durable timers on one heap: the wait for every pending DING step, in one task.

The timers themselves are durable in a store (each with its due time in wall-clock ms); this
is the in-process wait for them. ``run`` loads every pending timer from the store (paged),
then sleeps until the earliest one is due and hands all the due ones to ``fire`` in one
batch. 100,000 pending timers are 100,000 small tuples in one ``heapq`` list and one task,
never a task each.

Time: due times are wall-clock ms from an injectable ``Clock`` (what is persisted); the
wait itself is on trio's clock, capped at ``max_sleep`` so that a wall clock that jumps (NTP,
or a test's ``ManualClock``) is noticed within that much; ``poke`` re-checks at once.

Guarantees: a key is fired at the earliest once its due time has passed by the clock, in
due order; keys due together go out in one ``fire`` call of at most ``batch`` keys. A key
may be fired twice (scheduled twice, or re-scheduled after a failed ``fire``): ``fire``
must be idempotent, which the store's state checks make it. If ``fire`` raises, its keys
are scheduled again ``retry_seconds`` later; if the store refused its writes
(``server.background.Outage``), later still, the wait doubling while the refusals last.
Cancelling ``run`` loses nothing: the store still has every timer, and the next ``run`` loads
them again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from server.background import REFUSED, Outage
from server.clock import Clock

log = logging.getLogger(__name__)

K = TypeVar("K")

#: Longest in-process wait before the wall clock is read again.
DEFAULT_MAX_SLEEP_SECONDS = 1.0
#: Keys handed to one ``fire`` call at most.
DEFAULT_BATCH = 500
#: After ``fire`` raised, its keys are due again this much later.
DEFAULT_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    #: Timers waiting in the heap (a timer whose step finished early stays until it is due).
    pending: int
    #: Keys handed to ``fire`` so far, and ``fire`` calls that raised.
    fired: int
    failures: int
    #: The earliest due time waiting, or None.
    next_due: int | None


class Scheduler(Generic[K]):
    """Wall-clock timers on one heap, fired in batches by one task (see the module doc)."""

    def __init__(
        self,
        clock: Clock,
        fire: Callable[[list[K]], Awaitable[None]],
        *,
        max_sleep: float = DEFAULT_MAX_SLEEP_SECONDS,
        batch: int = DEFAULT_BATCH,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        name: str = "timers",
    ) -> None:
        if max_sleep <= 0 or batch < 1:
            raise ValueError("max_sleep must be positive and batch at least 1")
        self._clock = clock
        self._fire = fire
        self._max_sleep = max_sleep
        self._batch = batch
        self._retry_ms = int(retry_seconds * 1000)
        # (due_ms, tie-breaker, key): the tie-breaker keeps keys out of comparisons.
        self._heap: list[tuple[int, int, K]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._fired = 0
        self._failures = 0
        #: ``fire`` calls whose writes the store refused (logged once per outage).
        self._outage = Outage(name)

    def schedule(self, due_ms: int, key: K) -> None:
        """Wait for ``key`` until ``due_ms`` (wall clock). Safe to call before ``run``."""
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (due_ms, next(self._order), key))
        if earliest is None or due_ms < earliest:
            self._wake.set()

    def poke(self) -> None:
        """Read the clock again now (after a wall-clock jump)."""
        self._wake.set()

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            pending=len(self._heap),
            fired=self._fired,
            failures=self._failures,
            next_due=self._heap[0][0] if self._heap else None,
        )

    async def run(
        self,
        load: Callable[[], AsyncIterator[tuple[int, K]]] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Load the pending timers (``(due_ms, key)`` pairs from ``load``), report started,
        then fire timers as they fall due, until cancelled."""
        if load is not None:
            async for due_ms, key in load():
                self._heap.append((due_ms, next(self._order), key))
            heapq.heapify(self._heap)
        task_status.started()
        while True:
            due = self._pop_due(self._clock.now_ms())
            if due:
                await self._fire_batch(due)
                continue
            self._wake = trio.Event()
            delay = self._max_sleep
            if self._heap:
                delay = min(delay, max(0.0, (self._heap[0][0] - self._clock.now_ms()) / 1000))
            with trio.move_on_after(delay):
                await self._wake.wait()

    def _pop_due(self, now_ms: int) -> list[K]:
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now_ms and len(due) < self._batch:
            due.append(heapq.heappop(self._heap)[2])
        return due

    async def _fire_batch(self, keys: list[K]) -> None:
        self._fired += len(keys)
        try:
            await self._fire(keys)
        except REFUSED as error:
            # Logged once per outage; the retries back off (the store may refuse until the
            # server restarts).
            retry_ms = max(self._retry_ms, int(self._outage.refused(error) * 1000))
        except Exception:
            log.exception("timers failed to fire; retrying", extra={"timers": len(keys)})
            retry_ms = self._retry_ms
        else:
            self._outage.over()
            return
        self._failures += 1
        retry_at = self._clock.now_ms() + retry_ms
        for key in keys:
            heapq.heappush(self._heap, (retry_at, next(self._order), key))
        # Do not spin on a failing store: wait for the retry time (or a poke).
        with trio.move_on_after(retry_ms / 1000):
            self._wake = trio.Event()
            await self._wake.wait()
