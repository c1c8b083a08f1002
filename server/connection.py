"""One client connection: identity, a bounded send queue, and the slow-consumer policy.

Backpressure policy (house habit 6): every frame for the client (replies and events) goes
through one bounded queue of ``send_queue_frames`` frames, drained by the connection's
writer task. A connection whose queue is full is closed with 4050 (slow consumer) instead
of buffering without bound or slowing everyone else's fan-out. Nothing is lost: durable
events are in the store and the client catches up by sync token after it reconnects.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol.errors import CloseCode

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(slots=True)
class CloseRequest:
    code: int
    reason: str


@dataclass(eq=False, slots=True)
class Connection:
    ws: WebSocketConnection
    queue_frames: int
    conn_id: int = field(default_factory=lambda: next(_ids))
    user_id: int | None = None
    device_id: int | None = None
    hello_done: bool = False
    #: Group members whose presence (and typing) this connection is shown.
    presence_watch: frozenset[int] = frozenset()
    #: Set once the connection must close; the gateway closes the socket with it.
    close_request: CloseRequest | None = None
    #: Consecutive undecodable frames (a client that only sends garbage is closed).
    bad_frames: int = 0
    #: Failed authentication attempts before authenticating (closed 4003 at the limit).
    auth_failures: int = 0
    frames_sent: int = 0
    _send: trio.MemorySendChannel[bytes] = field(init=False)
    _receive: trio.MemoryReceiveChannel[bytes] = field(init=False)
    _scope: trio.CancelScope | None = None
    #: Set when the writer has sent everything queued (or the socket closed).
    writer_done: trio.Event = field(default_factory=trio.Event)
    #: Covers only the wait for the next frame, so shutdown can stop reading without
    #: cancelling a request in flight.
    read_scope: trio.CancelScope | None = None

    def __post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[bytes](self.queue_frames)

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def send_nowait(self, frame: bytes) -> None:
        """Queue a frame without blocking; a full queue closes the connection (4050)."""
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.close_soon(CloseCode.SLOW_CONSUMER, "send queue full", flush=False)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close_soon(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Ask the gateway to close this connection with ``code``; idempotent.

        With ``flush`` the connection stops reading, and what is queued (such as the error
        reply that explains the close) goes out before the close frame. Without it (a slow
        consumer, whose queue is the problem) the connection is torn down at once.
        """
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason)
        if flush:
            self.wake_reader()
        elif self._scope is not None:
            self._scope.cancel()

    def wake_reader(self) -> None:
        """Stop waiting for the next frame (used by shutdown); a request being handled goes on."""
        if self.read_scope is not None:
            self.read_scope.cancel()

    def bind_scope(self, scope: trio.CancelScope) -> None:
        """The scope that ``close_soon`` cancels: the connection's reader and writer."""
        self._scope = scope

    async def run_writer(self) -> None:
        """Drain the send queue into the socket until the queue is closed."""
        try:
            async with self._receive:
                async for frame in self._receive:
                    try:
                        await self.ws.send_message(frame)
                    except ConnectionClosed:
                        return
                    self.frames_sent += 1
        finally:
            self.writer_done.set()

    def finish_sending(self) -> None:
        """No more frames will be queued; the writer exits once the queue is drained."""
        self._send.close()

    def statistics(self) -> dict[str, int]:
        stats = self._send.statistics()
        return {"queued": stats.current_buffer_used, "sent": self.frames_sent}
