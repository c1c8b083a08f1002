"""The live-stream machinery of one server process (L1).

``LiveRuntime`` owns the registry of active streams, the counts throttle and the grace
timers, and sends participants the events that follow from a change of state (a co-host
leaving, the host going away or coming back). Its ``run`` is one background service in
the app's nursery: it restores the streams that were live when the server stopped (each
gets a fresh grace period for its host), then runs the counts flusher, the grace timers and
the periodic store of viewer figures. Decisions are not made here: the services ask
``server.policy`` and then change the state through this object.

The hub calls ``connection_closed`` for every connection that goes away, so participants
never linger after their socket closed.

The registry is per process: with several server processes, every participant of a stream
must reach the process that runs it (route by live id), or the registry must move behind a
shared seam like the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import msgspec
import trio

from protocol.live import LiveCohostEvent, LiveHandEvent, LiveHostEvent
from server import policy
from server.background import REFUSED, Outage
from server.clock import Clock
from server.config import Config
from server.connection import Connection
from server.live.grace import GraceTimers
from server.live.registry import Departure, LiveRegistry, LiveStream
from server.live.throttle import CountsThrottle
from storage.errors import StoreError
from storage.live import LiveStore
from storage.stores import Stores

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()

Expire = Callable[[str], Awaitable[None]]


class LiveRuntime:
    def __init__(
        self,
        stores: Stores,
        *,
        clock: Clock,
        max_cohosts: int,
        grace_seconds: float,
        counts_seconds: float,
        checkpoint_seconds: float,
    ) -> None:
        self.registry = LiveRegistry()
        self.counts = CountsThrottle(self.registry, interval=counts_seconds)
        self.grace = GraceTimers()
        self.clock = clock
        self.max_cohosts = max_cohosts
        self.grace_seconds = grace_seconds
        self.checkpoint_seconds = checkpoint_seconds
        #: Checkpoints and expiries whose writes were refused (logged once per outage).
        self.outage = Outage("live streams")
        self._stores = stores
        #: Group id -> (the member-id tuple the member cache gave, the same ids as a set), so
        #: thousands of joins test membership in O(1) and follow the cache's invalidation.
        self._member_views: dict[str, tuple[tuple[int, ...], frozenset[int]]] = {}

    @classmethod
    def from_config(cls, config: Config, stores: Stores, *, clock: Clock) -> LiveRuntime:
        return cls(
            stores,
            clock=clock,
            max_cohosts=config.live_max_cohosts,
            grace_seconds=config.live_grace_seconds,
            counts_seconds=config.live_counts_seconds,
            checkpoint_seconds=config.live_checkpoint_seconds,
        )

    def store_for(self, origin: str) -> LiveStore:
        """The store that keeps the record of a stream started in group ``origin``: the
        origin group's own (D2/D3)."""
        if policy.store_for(origin) == "organisation":
            return self._stores.org_live
        return self._stores.live

    # --- events to participants -------------------------------------------------------------

    def send(self, conns: Iterable[Connection], event: msgspec.Struct) -> None:
        """Encode ``event`` once and queue the same bytes on each connection."""
        frame = _encoder.encode(event)
        for conn in conns:
            conn.send_nowait(frame)

    def send_all(self, stream: LiveStream, event: msgspec.Struct) -> None:
        self.send(stream.connections(), event)

    def connection_closed(self, conn: Connection) -> None:
        """The hub's detach hook: the connection leaves every stream it was in."""
        for stream, departure in self.registry.connection_closed(conn):
            self.announce_departure(stream, departure)

    def announce_departure(self, stream: LiveStream, departure: Departure) -> None:
        """Tell whom it concerns that a participant left (the count follows, coalesced)."""
        if departure.role == "host":
            self.host_away(stream)
            return
        if departure.role == "cohost":
            event = LiveCohostEvent(
                live_id=stream.live_id, user=departure.user, device=departure.device, cohost=False
            )
            self.send_all(stream, event)
        if departure.hand and stream.host_conn is not None:
            hand = LiveHandEvent(
                live_id=stream.live_id, user=departure.user, device=departure.device, raised=False
            )
            self.send([stream.host_conn], hand)

    def host_away(self, stream: LiveStream) -> None:
        """The host's connection is gone: wait ``grace_seconds`` for them, tell the others."""
        self.grace.arm(stream.live_id, trio.current_time() + self.grace_seconds)
        resume_by = self.clock.now_ms() + int(self.grace_seconds * 1000)
        event = LiveHostEvent(
            live_id=stream.live_id, online=False, device=None, resume_by=resume_by
        )
        self.send_all(stream, event)

    def host_back(self, stream: LiveStream, conn: Connection) -> None:
        """Seat the host on ``conn``; a connection that hosted until now is told too."""
        self.grace.cancel(stream.live_id)
        previous = stream.host_conn
        self.registry.set_host(stream, conn)
        event = LiveHostEvent(
            live_id=stream.live_id, online=True, device=conn.device_id, resume_by=None
        )
        self.send_all(stream, event)
        if previous is not None and previous is not conn:
            self.send([previous], event)

    def forget(self, stream: LiveStream) -> None:
        """The stream ended: drop its state, its timer and its member views."""
        self.registry.discard(stream)
        self.grace.cancel(stream.live_id)
        for group in stream.groups:
            if self.registry.active_in(group) is None:
                self._member_views.pop(group, None)

    def member_view(self, group: str, ids: tuple[int, ...]) -> frozenset[int]:
        cached = self._member_views.get(group)
        if cached is not None and cached[0] is ids:
            return cached[1]
        view = frozenset(ids)
        self._member_views[group] = (ids, view)
        return view

    # --- the background service -------------------------------------------------------------

    async def restore(self) -> int:
        """Put every stream recorded as active back into the registry, its host away: the
        host has ``grace_seconds`` from now to resume it. Returns how many."""
        records = [
            record
            for store in (self._stores.live, self._stores.org_live)
            for record in await store.active_lives()
        ]
        deadline = trio.current_time() + self.grace_seconds
        for record in records:
            stream = LiveStream.from_record(record)
            self.registry.add(stream)
            self.grace.arm(stream.live_id, deadline)
        if records:
            log.info("live streams restored into their grace period", extra={"n": len(records)})
        return len(records)

    async def checkpoint(self) -> None:
        """Store the peak and total viewers of every stream whose figures moved."""
        for stream in self.registry.streams():
            figures = (stream.peak, stream.total_viewers)
            if figures == stream.checkpointed or stream.ended:
                continue
            try:
                await self.store_for(stream.origin).checkpoint_live(
                    stream.origin, stream.number, peak_viewers=figures[0], total_viewers=figures[1]
                )
            except REFUSED as error:
                self.outage.refused(error)  # the next checkpoint retries
                continue
            except StoreError:
                log.exception("storing live viewer figures failed; will retry")
                continue
            self.outage.over()
            stream.checkpointed = figures

    async def run(
        self, expire: Expire, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Restore, then run the counts flusher, the grace timers and the checkpoints until
        cancelled. ``expire(live_id)`` ends a stream whose host did not come back."""
        await self.restore()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.grace.run, expire)
            await nursery.start(self.counts.run)
            nursery.start_soon(self._checkpoints)
            task_status.started()

    async def _checkpoints(self) -> None:
        while True:
            await trio.sleep(self.checkpoint_seconds)
            await self.checkpoint()

    def statistics(self) -> dict[str, int]:
        return {
            **self.registry.statistics(),
            **self.counts.statistics(),
            **self.grace.statistics(),
        }
