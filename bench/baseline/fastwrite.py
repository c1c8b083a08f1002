"""Write a pre-built WebSocket frame straight to a server connection's non-blocking socket.

Why it works
------------
Frames from a server to a client are never masked (RFC 6455 §5.1), so the bytes of one
unfragmented data frame are the same on every connection: build them once with
``binary_frame``/``text_frame`` and hand the same ``bytes`` object to every receiver.

``send_frame`` then tries one ``os.write`` on the connection's socket, which trio always
keeps in non-blocking mode. When the kernel takes the whole frame (the usual case on an
uncongested connection) the call never yields to the scheduler: no lock round-trip, no
checkpoint, no per-connection wsproto encode. It falls back to the awaited path, under
trio-websocket's own write lock, when

* another task holds the connection's write lock (its bytes go first, ours queue behind),
* the socket buffer is full (``BlockingIOError``), or
* the kernel took only part of the frame (the rest is sent with the lock held, so no other
  writer can interleave bytes into the middle of our frame).

What it relies on (checked against trio-websocket 0.12.2, wsproto 1.2/1.3, trio 0.27+)
------------------------------------------------------------------------------------
Private attributes of ``trio_websocket.WebSocketConnection``:

* ``_stream``: the ``trio.SocketStream`` the connection was made over (plain TCP only;
  a TLS stream has no plain socket to write to, and ``send_frame`` refuses it);
* ``_stream_lock``: the ``trio.StrictFIFOLock`` that ``WebSocketConnection._send`` holds
  around every ``send_all``; holding it is what keeps frames whole;
* ``_close_reason``: ``None`` while the connection is open;
* ``_wsproto``: its ``state`` must be ``ConnectionState.OPEN`` (no close frame sent yet);
* ``_abort_web_socket()``: the clean-up trio-websocket itself runs when a write fails.

Bypassing ``wsproto.WSConnection.send`` is sound because for a complete (``fin``) data
frame wsproto keeps no outbound state (its ``_outbound_opcode`` only matters for
fragmented messages), and trio-websocket's server never negotiates an extension
(``AcceptConnection`` is sent without ``extensions``), so no per-message-deflate or RSV bit
could apply to the frame.

From trio only the public ``SocketStream.socket.fileno()`` and ``SocketStream.send_all``
are used. ``os.write`` on a closed peer raises ``BrokenPipeError``, not a signal, because
Python ignores SIGPIPE.
"""

from __future__ import annotations

import os

import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState

# The frame header is the server's (RFC 6455 §5.2): one implementation, measured on both sides.
from server.transport.frames import OPCODE_TEXT, frame_header

__all__ = ["binary_frame", "frame_header", "send_frame", "text_frame"]


def binary_frame(payload: bytes) -> bytes:
    """One complete server-to-client binary frame carrying ``payload``."""
    return frame_header(len(payload)) + payload


def text_frame(text: str) -> bytes:
    """One complete server-to-client text frame carrying ``text`` as UTF-8."""
    data = text.encode("utf-8")
    return frame_header(len(data), opcode=OPCODE_TEXT) + data


def _closed(ws: WebSocketConnection) -> ConnectionClosed:
    return ConnectionClosed(ws._close_reason or CloseReason(1006, "connection is not open"))


async def _send_rest(ws: WebSocketConnection, data: memoryview) -> None:
    """The awaited path; the caller holds ``ws._stream_lock``."""
    try:
        await ws._stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await ws._abort_web_socket()
        raise _closed(ws) from None


async def send_frame(ws: WebSocketConnection, frame: bytes) -> None:
    """Send one complete pre-built frame on server connection ``ws``.

    Raises ``ConnectionClosed`` like ``WebSocketConnection.send_message``. Does not
    checkpoint when the frame goes out in one non-blocking write.
    """
    if ws._close_reason is not None or ws._wsproto.state is not ConnectionState.OPEN:
        raise _closed(ws)
    stream = ws._stream
    if not isinstance(stream, trio.SocketStream):
        raise TypeError("send_frame needs a plain TCP trio.SocketStream (no TLS)")
    lock = ws._stream_lock
    if lock.locked():
        async with lock:
            # Whoever held the lock may have sent a close frame meanwhile.
            if ws._close_reason is not None or ws._wsproto.state is not ConnectionState.OPEN:
                raise _closed(ws)
            await _send_rest(ws, memoryview(frame))
        return
    fd = stream.socket.fileno()
    if fd == -1:
        await ws._abort_web_socket()
        raise _closed(ws)
    try:
        sent = os.write(fd, frame)
    except BlockingIOError:
        sent = 0
    except OSError:
        await ws._abort_web_socket()
        raise _closed(ws) from None
    if sent == len(frame):
        return
    # Take the lock before yielding so that nobody can write between our two parts.
    lock.acquire_nowait()
    try:
        await _send_rest(ws, memoryview(frame)[sent:])
    finally:
        lock.release()
