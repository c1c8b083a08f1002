"""Grace periods of hosts who went away: one heap of deadlines, one task for all streams.

When a stream's host disconnects (or the server restarts), the stream waits for them until
a deadline; ``arm`` sets it, ``cancel`` drops it when the host is back, and ``run`` calls
``expire(key)`` for each deadline that passes. There is never a task per stream: the one
runner sleeps until the earliest deadline, and ``arm`` wakes it when a nearer one arrives.

Deadlines are trio times (the in-process clock that tests drive with ``MockClock``); they are
not stored: after a restart every stream that was live gets a fresh grace period.
Cancelled deadlines stay in the heap until they reach its top (lazy deletion), so ``arm``
and ``cancel`` are O(log n) and O(1).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

Expire = Callable[[str], Awaitable[None]]


class GraceTimers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._deadlines: dict[str, float] = {}
        self._order = itertools.count()
        self._wake = trio.Event()
        self.expired = 0

    def arm(self, key: str, deadline: float) -> None:
        """Expire ``key`` at ``deadline`` (replacing an earlier deadline for it)."""
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), key))
        self._wake.set()

    def cancel(self, key: str) -> None:
        self._deadlines.pop(key, None)

    def deadline(self, key: str) -> float | None:
        return self._deadlines.get(key)

    def next_deadline(self) -> float | None:
        """The earliest live deadline (stale heap entries are dropped on the way)."""
        heap = self._heap
        while heap and self._deadlines.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[str]:
        """Keys whose deadline is at or before ``now``, in deadline order; they are disarmed."""
        due = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._deadlines[key]
            due.append(key)
        return due

    async def run(
        self, expire: Expire, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            deadline = self.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()
            for key in self.pop_due(trio.current_time()):
                self.expired += 1
                try:
                    await expire(key)
                except Exception:
                    # One stream failing to end (a full disk) must not stop the others'
                    # timers; its record stays active and a restart retries it.
                    log.exception("ending a live stream after its grace period failed")

    def statistics(self) -> dict[str, int]:
        return {"armed": len(self._deadlines), "heap": len(self._heap), "expired": self.expired}
