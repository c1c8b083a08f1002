"""One heartbeat for every connection: drop a peer that stops answering pings.

Every connection is pinged ``heartbeat_seconds`` after it registered, and again that long
after each pong; a ping unanswered for ``heartbeat_seconds`` closes the connection with
4052 (heartbeat timeout), which catches half-open TCP connections too. One task, in the
gateway's task nursery (``Gateway.run``), sweeps a queue ordered by due time (every entry is
due one interval after it was queued, so appending keeps the order) instead of a sleeping
task per connection; a ping in flight is a short task in this service's nursery, cancelled
when its connection goes away. Pings due within a twentieth of an interval (at most 1 s) of
each other go out together, so the sweeper wakes a few times per interval, not once per
connection.
"""

from __future__ import annotations

import logging
from collections import deque

import trio
from trio_websocket import ConnectionClosed

from protocol.errors import CloseCode
from server.config import Config
from server.connection import Connection

log = logging.getLogger(__name__)


class Heartbeat:
    """Pings registered connections. ``run`` in a nursery; ``add``/``discard`` connections."""

    def __init__(self, config: Config) -> None:
        self._config = config
        #: (due time, connection), due times ascending; entries of discarded connections
        #: are skipped when they come up.
        self._queue: deque[tuple[float, Connection]] = deque()
        self._members: set[Connection] = set()
        #: Pings in flight, to cancel when their connection goes away.
        self._pinging: dict[Connection, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def interval(self) -> float:
        return self._config.heartbeat_seconds

    def add(self, conn: Connection) -> None:
        """Start pinging ``conn`` (first ping one interval from now)."""
        self._members.add(conn)
        self._queue.append((trio.current_time() + self.interval, conn))

    def discard(self, conn: Connection) -> None:
        """Stop pinging ``conn``; a ping in flight is cancelled."""
        self._members.discard(conn)
        scope = self._pinging.pop(conn, None)
        if scope is not None:
            scope.cancel()
        if len(self._queue) > 2 * len(self._members) + 64:
            # Do not hold on to many closed connections until their turn comes.
            self._queue = deque(entry for entry in self._queue if entry[1] in self._members)

    def __len__(self) -> int:
        return len(self._members)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await self._sweep(nursery)
            finally:
                self._nursery = None

    async def _sweep(self, nursery: trio.Nursery) -> None:
        while True:
            interval = self.interval
            now = trio.current_time()
            horizon = now + min(interval / 20, 1.0)
            queue = self._queue
            while queue and queue[0][0] <= horizon:
                _, conn = queue.popleft()
                if conn in self._members and conn not in self._pinging:
                    scope = trio.CancelScope()
                    self._pinging[conn] = scope
                    nursery.start_soon(self._ping, conn, scope, interval)
            # A connection added meanwhile is due no sooner than one interval from now.
            await trio.sleep_until(queue[0][0] if queue else now + interval)

    async def _ping(self, conn: Connection, scope: trio.CancelScope, interval: float) -> None:
        answered = False
        try:
            with scope:
                with trio.move_on_after(interval):
                    await conn.ws.ping()
                    answered = True
                if not answered:
                    conn.close_soon(CloseCode.HEARTBEAT_TIMEOUT, "no pong")
        except ConnectionClosed:
            pass
        except Exception:
            # One connection's failure must not stop the heartbeat of every other one.
            log.exception("heartbeat ping failed")
            conn.close_soon(CloseCode.INTERNAL_ERROR, "heartbeat failed")
        finally:
            if self._pinging.get(conn) is scope:
                del self._pinging[conn]
        if answered and conn in self._members:
            self._queue.append((trio.current_time() + interval, conn))
