"""Coalesced counts: one ``ev.live.counts`` per changed stream per interval, for all streams.

Thousands of viewers may join a stream within seconds, and likes arrive one tap at a time.
Sending every participant an event per join or per like would be a fan-out storm (n joins
times n participants). Instead a join, a leave or a like only marks its stream dirty; once
per ``interval`` one task takes the dirty streams and sends each participant of each of
them a single event with the viewer count and the likes since the previous event. The
event is encoded once per stream and the same bytes are queued on every connection.

Backpressure: events go through each connection's bounded send queue; a connection that
cannot keep up is closed as a slow consumer (``server.connection``). Counts are ephemeral:
a participant who misses one gets the next.
"""

from __future__ import annotations

import msgspec
import trio

from protocol.live import LiveCountsEvent
from server.live.registry import LiveRegistry

_encoder = msgspec.msgpack.Encoder()


class CountsThrottle:
    def __init__(self, registry: LiveRegistry, *, interval: float) -> None:
        self._registry = registry
        self.interval = interval
        self.events = 0
        self.frames = 0

    def flush(self) -> int:
        """Send the pending counts of every dirty stream now; returns the events built."""
        built = 0
        for stream in self._registry.take_dirty():
            event = LiveCountsEvent(
                live_id=stream.live_id,
                viewers=stream.viewer_count,
                likes=stream.likes_pending,
                total_likes=stream.likes_total,
            )
            stream.likes_pending = 0
            frame = _encoder.encode(event)
            for conn in stream.connections():
                conn.send_nowait(frame)
                self.frames += 1
            built += 1
        self.events += built
        return built

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.flush()

    def statistics(self) -> dict[str, int]:
        return {"events": self.events, "frames": self.frames}
