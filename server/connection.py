"""One client connection: identity, a bounded send queue, and the slow-consumer policy.

Backpressure policy (house habit 6): every frame for the client goes through one queue of
at most ``send_queue_frames`` frames, drained by the connection's writer task; a frame
counts until the writer has handed it to the socket. A frame that the socket takes at once
while nothing is queued skips the queue (``WebSocket.write_nowait``); the writer task runs, in the
connection's nursery, only while frames wait, and the queue itself is made when first
needed, so an idle connection holds neither.

* **Events** (pushed by fan-out, ``send_nowait``) are also held to ``send_queue_bytes``
  bytes of queued events. An event that would pass either bound closes the connection with
  4050 (slow consumer) at once, without flushing, instead of buffering without bound or
  slowing everyone else's fan-out. Nothing is lost: durable events are in the store and the
  client catches up by sync token after it reconnects; an ephemeral event it missed
  (typing, presence, live counts) is stale anyway.
* **Replies** (``reply_nowait``) are not held to the byte bound, since one reply (a page of
  sync or history) may be large; instead the gateway reads no further request while the
  queue holds more than ``send_queue_bytes`` (``wait_send_room``), so a client that does not
  read its replies stops being served and cannot make them pile up.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass, field

import trio

from protocol.errors import CloseCode
from server.transport import ConnectionClosed, WebSocket

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(slots=True)
class CloseRequest:
    code: int
    reason: str


@dataclass(eq=False, slots=True)
class Connection:
    ws: WebSocket
    queue_frames: int
    queue_bytes: int = 4 * 1024 * 1024
    conn_id: int = field(default_factory=lambda: next(_ids))
    user_id: int | None = None
    device_id: int | None = None
    #: The user's token generation the connection authenticated under (A2: a later one
    #: means its session was revoked; ``session.revoked_while_attaching`` checks it).
    token_generation: int | None = None
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
    #: Bytes of the frames queued and not yet handed to the socket; of events only.
    queued_bytes: int = 0
    event_bytes: int = 0
    #: (size, is an event) of each queued frame, in queue order (made when first needed:
    #: an idle connection holds no queue, channel, event or writer task).
    _sizes: deque[tuple[int, bool]] | None = None
    _room: trio.Event | None = None
    # Items are frames' payloads, or the rest of a partly written frame (write_nowait).
    _send: trio.MemorySendChannel[bytes | memoryview] | None = None
    _recv: trio.MemoryReceiveChannel[bytes | memoryview] | None = None
    #: ``ws`` when it is a ``WebSocket`` (None: a test's stand-in, written to with
    #: ``send_message`` only).
    _direct: WebSocket | None = field(init=False)
    #: Where a writer task is started when frames wait (the gateway's task nursery).
    _nursery: trio.Nursery | None = None
    #: The scope of the connection's reader, and of its writer task while one runs: what
    #: ``close_soon`` without flush cancels.
    _scope: trio.CancelScope | None = None
    _writer_scope: trio.CancelScope | None = None
    #: A writer task is draining the queue (``_write_queued``).
    _writing: bool = False
    #: The gateway's reader is waiting in ``ws.receive()`` (set by the gateway just around
    #: that wait): only then may ``wake_reader`` cancel the reader's scope.
    reading: bool = False
    #: Torn down without flushing (``close_soon(flush=False)``): nothing more is written.
    _aborted: bool = False
    #: No frame can be queued any more: ``finish_sending`` was called, or the writer found
    #: the connection closed.
    _finished: bool = False
    #: Set when the writer has sent everything queued (``wait_sent``).
    _done: trio.Event | None = None

    def __post_init__(self) -> None:
        self._direct = self.ws if isinstance(self.ws, WebSocket) else None

    @property
    def _receive(self) -> trio.MemoryReceiveChannel[bytes | memoryview]:
        """The receive side of the send queue (made on first use)."""
        if self._recv is None:
            self._open_queue()
        assert self._recv is not None
        return self._recv

    def _open_queue(self) -> trio.MemorySendChannel[bytes | memoryview]:
        self._send, self._recv = trio.open_memory_channel[bytes | memoryview](self.queue_frames)
        self._sizes = deque()
        if self._finished:
            self._send.close()
        return self._send

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def send_nowait(self, frame: bytes) -> None:
        """Queue an event without blocking; past either bound the connection is closed
        with 4050 (see the module docstring)."""
        if self.event_bytes + len(frame) > self.queue_bytes:
            self.close_soon(CloseCode.SLOW_CONSUMER, "send queue full", flush=False)
            return
        self._queue(frame, event=True)

    def reply_nowait(self, frame: bytes) -> None:
        """Queue the reply to a request: held to the frame bound only (see the module
        docstring for how replies are kept from piling up)."""
        self._queue(frame, event=False)

    def _queue(self, frame: bytes, *, event: bool) -> None:
        if self._aborted:
            # Torn down without flush (a slow consumer): what was queued is dropped, and a
            # later frame must not reach the socket either, or the client would see the
            # events after a hole (the hub still knows the connection until it detaches).
            return
        item: bytes | memoryview = frame
        if not self._sizes and self._direct is not None:
            # Nothing queued and the writer idle: straight to the socket if it takes it all
            # now, in order (WebSocket.write_nowait); else what is left goes through the
            # queue.
            rest = self._direct.write_nowait(frame)
            if rest is None:
                self.frames_sent += 1
                return
            item = rest
        send = self._send if self._send is not None else self._open_queue()
        try:
            send.send_nowait(item)
        except trio.WouldBlock:
            self.close_soon(CloseCode.SLOW_CONSUMER, "send queue full", flush=False)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if isinstance(item, memoryview) and self._direct is not None:
                # Half a frame is on the wire and the rest can never follow: end it now.
                self._direct.abandon()
                self.close_soon(CloseCode.SLOW_CONSUMER, "send queue closed", flush=False)
        else:
            assert self._sizes is not None
            self._sizes.append((len(item), event))
            self.queued_bytes += len(item)
            if event:
                self.event_bytes += len(item)
            if not self._writing and self._nursery is not None:
                # A writer task only while something waits (most frames never do).
                self._writing = True
                self._nursery.start_soon(self._write_queued)

    async def wait_send_room(self) -> None:
        """Wait until the queue holds at most ``queue_bytes`` bytes (the gateway calls it
        before reading the next request), or until ``wake_reader`` is called: the room
        event is set only once there is room (``_sent``) or by ``wake_reader``."""
        if self.queued_bytes > self.queue_bytes:
            if self._room is None or self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()

    def _sent(self) -> None:
        assert self._sizes is not None
        size, event = self._sizes.popleft()
        self.queued_bytes -= size
        if event:
            self.event_bytes -= size
        if self.queued_bytes <= self.queue_bytes and self._room is not None:
            self._room.set()

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
        else:
            self._aborted = True
            self.finish_sending()
            if self._scope is not None:
                self._scope.cancel()
            self.stop_writer()

    def wake_reader(self) -> None:
        """End the gateway reader's wait for the next frame or for room in the queue (used
        by shutdown and ``close_soon``); a request being handled goes on. Whoever calls it
        has first set what makes the reader stop (the gateway's drain flag, or
        ``close_request``): the reader checks those before every wait.

        The wait for the next frame is ended by cancelling the reader's scope, the one the
        connection holds anyway (``bind``; no scope per read: ~0.7 KiB each for an idle
        connection), and only while the reader waits in ``ws.receive()`` (``reading``).
        trio delivers a cancel at a checkpoint, and ``receive`` returns a message it has
        read without one, so a message read is never lost to the cancel: the gateway sees
        ``cancel_called`` and stops before handling it (it was never started, so never
        acknowledged: the client sends it again after reconnecting)."""
        if self._room is not None:
            self._room.set()
        if self.reading and self._scope is not None:
            self._scope.cancel()

    @property
    def reader_cancelled(self) -> bool:
        """The reader's scope was cancelled (``wake_reader``, ``close_soon``)."""
        return self._scope is not None and self._scope.cancel_called

    @property
    def aborted(self) -> bool:
        """Torn down without flushing (``close_soon(flush=False)``)."""
        return self._aborted

    def bind(self, scope: trio.CancelScope, nursery: trio.Nursery | None) -> None:
        """The reader's scope, which ``close_soon`` without flush cancels, and the nursery
        a writer task is started in when frames wait (``None``: none is started)."""
        self._scope = scope
        self._nursery = nursery

    def stop_writer(self) -> None:
        """Cancel the writer task, if one is running (``wait_sent`` waits for its end)."""
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    async def _write_queued(self) -> None:
        """The writer task: started when a frame has to wait, ends when the queue is empty.
        It runs in a nursery shared by many connections, so nothing may escape it."""
        drained = False
        try:
            with trio.CancelScope() as self._writer_scope:
                if not self._aborted:
                    drained = await self._write_all(self._receive)
        except Exception:
            log.exception("a connection's writer failed; that connection ends")
            self.close_soon(CloseCode.INTERNAL_ERROR, "internal error", flush=False)
        finally:
            self._writer_scope = None
            self._writing = False
            if not drained:
                # The socket closed, or the connection is ending: nothing more can be sent.
                self.finish_sending()
                self._forget_unsendable()
            if self._direct is not None:
                self._direct.abandon()
            if self._done is not None:
                self._done.set()

    def _forget_unsendable(self) -> None:
        """Frames still queued when the socket is gone will never be sent: stop counting
        them, so that a reader waiting for room in the queue (``wait_send_room``) goes on,
        finds the connection closed and ends it. Counted, they kept the queue over its bound
        for good, and the connection open, online and unreachable, until shutdown."""
        if self._sizes:
            self._sizes.clear()
        self.queued_bytes = self.event_bytes = 0
        if self._room is not None:
            self._room.set()

    async def _write_all(self, receive: trio.MemoryReceiveChannel[bytes | memoryview]) -> bool:
        """Send what is queued until the queue is empty; False if the connection closed."""
        while True:
            try:
                frame = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return True
            if not await self._write(frame):
                return False

    async def _write(self, frame: bytes | memoryview) -> bool:
        try:
            if self._direct is not None:
                await self._direct.write(frame)
            else:  # no socket to write to directly: items are whole payloads
                await self.ws.send_message(bytes(frame))
        except ConnectionClosed:
            return False
        finally:
            self._sent()
        self.frames_sent += 1
        return True

    async def run_writer(self) -> None:
        """Drain the send queue into the socket until the queue is closed (a writer of its
        own for a connection without a nursery; the gateway's connections start one only
        while frames wait)."""
        try:
            async with self._receive as receive:
                async for frame in receive:
                    if not await self._write(frame):
                        return
        finally:
            if self._direct is not None:
                self._direct.abandon()

    def finish_sending(self) -> None:
        """No more frames will be queued; the writer exits once the queue is drained."""
        self._finished = True
        if self._send is not None:
            self._send.close()

    async def wait_sent(self) -> None:
        """Wait until the writer task has sent everything queued (or found the socket
        closed)."""
        while self._writing:
            if self._done is None or self._done.is_set():
                self._done = trio.Event()
            await self._done.wait()

    def statistics(self) -> dict[str, int]:
        return {
            "queued": 0 if self._send is None else self._send.statistics().current_buffer_used,
            "queued_bytes": self.queued_bytes,
            "event_bytes": self.event_bytes,
            "sent": self.frames_sent,
        }
