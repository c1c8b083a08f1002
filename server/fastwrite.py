"""Writing frames to a client: a pre-built WebSocket frame, straight to the socket.

Why: frames from a server to a client are never masked (RFC 6455 §5.1), so the bytes of one
unfragmented binary frame are the same on every connection. Fan-out encodes an event once
(``server.context``) and hands the same ``bytes`` object to every recipient; ``frame``
wraps it in a frame header once (a one-slot cache keyed by that object) and
``FrameWriter.write_nowait`` tries to hand it to the kernel with one non-blocking
``os.write``. When the kernel takes it all (the usual case), there is no task switch, no
lock round trip and no per-connection wsproto encode. Otherwise the connection's writer
task sends it through the awaited path (``FrameWriter.write``), under the write lock.

Ordering: ``server.connection.Connection`` calls ``write_nowait`` only when its queue is
empty and its writer idle; ``write_nowait`` itself declines when the write lock is held
(trio-websocket is writing a ping, pong or close) or the connection is closing. So frames
go out in the order they were given, and never into the middle of another frame.

A partial write: the kernel took only the start of the frame. The rest must follow before
any other byte, including trio-websocket's own pongs and close frame, so ``write_nowait``
takes the write lock *before returning* and hands the rest to the writer task, which sends
it and releases the lock. trio's ``StrictFIFOLock`` may only be released by the task that
took it, so ``FrameWriter`` replaces the connection's lock with a ``trio.Semaphore(1)``
(FIFO too, and releasable by another task) when it is made.

What it relies on (trio-websocket 0.12.2, wsproto 1.2/1.3; ``tests/server/
test_fastwrite.py`` fails if any of it changes):

* ``WebSocketConnection._stream``: the ``trio.SocketStream`` (plain TCP; under TLS there
  is no socket to write to and ``FrameWriter.for_ws`` returns ``None``: the awaited
  ``send_message`` path is used instead);
* ``WebSocketConnection._stream_lock``: held around every write (``_send``), used only as
  ``async with``; replaced here as said above;
* ``WebSocketConnection._close_reason`` (``None`` while open) and ``_wsproto.state``
  (``ConnectionState.OPEN`` until a close frame is sent);
* ``WebSocketConnection._abort_web_socket()``: trio-websocket's own clean-up after a failed
  write;
* ``WebSocketConnection._wsproto``, a ``wsproto.WSConnection``, whose ``handshake`` (the
  HTTP upgrade: an h11 connection and its buffers, ~1.8 KiB) is used only while
  ``connection`` is ``None``, but for ``events()``, which drains it first: once the
  connection is open, ``release_handshake`` swaps it for an empty stand-in, so an idle
  connection does not keep it for its lifetime.

Bypassing ``wsproto.WSConnection.send`` is sound because wsproto keeps no outbound state
for a complete (``fin``) data frame and trio-websocket's server never negotiates an
extension, so no compression or RSV bit applies.
"""

from __future__ import annotations

import os
import struct

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto import WSConnection
from wsproto.connection import ConnectionState

__all__ = ["FrameWriter", "frame", "release_handshake"]

_FIN = 0x80
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def frame_header(length: int, *, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of an unmasked, unfragmented frame (RFC 6455 §5.2), binary unless told."""
    first = _FIN | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


# One slot: fan-out hands the same payload object to every recipient in a row.
_last_payload: bytes | None = None
_last_frame = b""


def frame(payload: bytes) -> bytes:
    """One complete server-to-client binary frame carrying ``payload``."""
    global _last_payload, _last_frame
    if payload is not _last_payload:
        _last_frame = frame_header(len(payload)) + payload
        _last_payload = payload
    return _last_frame


class _HandshakeDone:
    """Stands in for wsproto's ``H11Handshake`` once the WebSocket is open: no events."""

    __slots__ = ()

    def events(self) -> tuple[()]:
        return ()


_HANDSHAKE_DONE = _HandshakeDone()


def release_handshake(ws: object) -> bool:
    """Drop the finished HTTP upgrade state of an open server connection (see the module
    docstring). False, and nothing changed, where it does not apply."""
    if not isinstance(ws, WebSocketConnection):
        return False
    proto = getattr(ws, "_wsproto", None)
    if not isinstance(proto, WSConnection) or proto.connection is None:
        return False
    if list(proto.handshake.events()):  # never: the upgrade's events were all taken
        return False
    proto.handshake = _HANDSHAKE_DONE  # type: ignore[assignment]
    return True


class FrameWriter:
    """The socket side of one server connection. Use ``for_ws``."""

    __slots__ = ("_fd_stream", "_lock", "_rest_pending", "_ws")

    def __init__(self, ws: WebSocketConnection, stream: trio.SocketStream) -> None:
        self._ws = ws
        self._fd_stream = stream
        self._lock = trio.Semaphore(1)
        self._rest_pending = False
        ws._stream_lock = self._lock  # type: ignore[assignment]

    @classmethod
    def for_ws(cls, ws: object) -> FrameWriter | None:
        """A writer for ``ws``, or ``None`` where only ``send_message`` can be used (TLS, a
        test's stand-in, or trio-websocket writing at this moment)."""
        if not isinstance(ws, WebSocketConnection):
            return None
        stream = getattr(ws, "_stream", None)
        lock = getattr(ws, "_stream_lock", None)
        if not isinstance(stream, trio.SocketStream):
            return None
        if not isinstance(lock, trio.StrictFIFOLock | trio.Lock) or lock.locked():
            return None
        return cls(ws, stream)

    def _open(self) -> bool:
        ws = self._ws
        return ws._close_reason is None and ws._wsproto.state is ConnectionState.OPEN

    def write_nowait(self, payload: bytes) -> bytes | memoryview | None:
        """Try to write ``payload``'s frame now, without blocking.

        ``None``: written whole. ``payload`` itself: nothing written; queue it for
        ``write``. A ``memoryview``: the rest of a partly written frame; the write lock is
        now held for it, and it must be queued ahead of anything else for ``write``.
        """
        if self._lock.value == 0 or not self._open():
            return payload
        data = frame(payload)
        try:
            sent = os.write(self._fd_stream.socket.fileno(), data)
        except OSError:
            # Would block, or the socket failed: the awaited path finds out which.
            return payload
        if sent == len(data):
            return None
        self._lock.acquire_nowait()  # free: checked above, and nothing ran since
        self._rest_pending = True
        return memoryview(data)[sent:]

    async def write(self, item: bytes | memoryview) -> None:
        """Send a queued item: a payload (framed here), or the rest of a partly written
        frame (``write_nowait`` holds the lock for it). ``ConnectionClosed`` like
        ``WebSocketConnection.send_message``."""
        if isinstance(item, memoryview):
            try:
                await self._send_all(item)
            finally:
                if self._rest_pending:
                    self._rest_pending = False
                    self._lock.release()
            return
        async with self._lock:
            if not self._open():
                raise self._closed()
            await self._send_all(frame(item))

    def abandon(self) -> None:
        """The writer is gone (the connection is ending): release the lock a partial write
        took for a rest that will never be sent, so the close can still go out."""
        if self._rest_pending:
            self._rest_pending = False
            self._lock.release()

    async def _send_all(self, data: bytes | memoryview) -> None:
        try:
            await self._fd_stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._ws._abort_web_socket()
            raise self._closed() from None

    def _closed(self) -> ConnectionClosed:
        reason = self._ws._close_reason or CloseReason(1006, "connection is not open")
        return ConnectionClosed(reason)
