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

from protocol.errors import CloseCode
from server.config import Config
from server.connection import Connection
from server.transport import ConnectionClosed

log = logging.getLogger(__name__)


class Heartbeat:
    """Pings registered connections. ``run`` in a nursery; ``add``/``discard`` connections."""

    def __init__(self, config: Config) -> None:
        self._config = config
        #: (due time, connections), due times ascending; entries of discarded connections
        #: are skipped when they come up. Connections due within ``_slack`` of a bucket's
        #: time join it (pinged that much early at most): a (time, connection) pair each
        #: cost ~90 B per idle connection, a place in a bucket's list 8 B.
        self._queue: deque[tuple[float, list[Connection]]] = deque()
        #: Connections in ``_queue`` (discarded ones included until they are dropped).
        self._queued = 0
        self._members: set[Connection] = set()
        #: Pings in flight, to cancel when their connection goes away.
        self._pinging: dict[Connection, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def interval(self) -> float:
        return self._config.heartbeat_seconds

    @property
    def _slack(self) -> float:
        # Half of what a sweep already takes early (``_sweep``'s horizon).
        return min(self.interval / 40, 0.5)

    def add(self, conn: Connection) -> None:
        """Start pinging ``conn`` (first ping one interval from now)."""
        self._members.add(conn)
        self._enqueue(trio.current_time() + self.interval, conn)

    def _enqueue(self, due: float, conn: Connection) -> None:
        queue = self._queue
        if queue and queue[-1][0] >= due - self._slack:
            queue[-1][1].append(conn)
        else:
            queue.append((due, [conn]))
        self._queued += 1

    def discard(self, conn: Connection) -> None:
        """Stop pinging ``conn``; a ping in flight is cancelled."""
        self._members.discard(conn)
        scope = self._pinging.pop(conn, None)
        if scope is not None:
            scope.cancel()
        if self._queued > 2 * len(self._members) + 64:
            # Do not hold on to many closed connections until their turn comes.
            members = self._members
            queue: deque[tuple[float, list[Connection]]] = deque()
            for due, conns in self._queue:
                kept = [c for c in conns if c in members]
                if kept:
                    queue.append((due, kept))
            self._queue = queue
            self._queued = sum(len(conns) for _, conns in queue)

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
                _, conns = queue.popleft()
                self._queued -= len(conns)
                for conn in conns:
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
            self._enqueue(trio.current_time() + interval, conn)
