"""The SDK's client WebSocket: wsproto driven directly over a trio stream (RFC 6455).

Why not trio-websocket: it runs a reader task per connection that parses with wsproto and
hands each message through a memory channel to the caller's own reader, two tasks and a
channel hop per message. Here the caller's reader is the only reader: ``get_message`` reads
bytes from the stream, feeds wsproto and returns complete messages; the other messages of
the same read wait in a deque and are returned without a read or a task switch. A reconnect
storm opens thousands of connections from one process, where that difference is most of the
client's CPU.

Contract (what trio-websocket's users relied on, kept):

- One task reads (``get_message``) at a time; any number of tasks send: ``send_message``
  writes each frame whole under a lock (wsproto masks every client frame). A send cancelled
  once part of its frame went out leaves the stream torn: no byte may follow (the server
  would read it as the rest of that frame), so later sends raise ``ConnectionClosed`` and
  ``aclose`` closes the stream without a close frame.
- Control frames are handled while reading: a ping is answered, a close from the server is
  answered and ends the messages. Nothing reads while nobody calls ``get_message``: the
  server then meets TCP backpressure (there is no queue to fill, see house habit 6) and its
  pings go unanswered.
- The messages that arrived before the server's close are still returned, then
  ``ConnectionClosed`` with its code and reason; 1006 (no reason) if the stream ended or
  broke without a close frame. After our own ``aclose`` the unread ones are dropped.
- The errors are trio-websocket's own classes (``ConnectionClosed``/``CloseReason``,
  ``HandshakeError`` and its ``ConnectionRejected``, ``ConnectionTimeout``,
  ``DisconnectionTimeout``), so ``except`` clauses written against it keep working.
- ``aclose`` sends its close frame whole even when its caller is cancelled (as
  trio-websocket's shielded close did), within ``CLOSE_SEND_TIMEOUT``: the server sees our
  code, not 1006. The wait for the server's reply is given up on cancellation, the stream is
  closed either way, and the cancellation goes on to the caller.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import cast

import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason as CloseCode
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

__all__ = [
    "CLOSE_SEND_TIMEOUT",
    "DISCONNECT_TIMEOUT",
    "MAX_MESSAGE_SIZE",
    "ClientWebSocket",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "HandshakeError",
    "upgrade",
]

#: trio-websocket's defaults, kept.
DISCONNECT_TIMEOUT = 60.0
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: How long ``aclose``'s close frame may take to go out, the wait for the send lock (a
#: frame of another task going out) included. It is sent shielded from cancellation, so
#: this is what bounds a cancelled ``aclose`` when the server does not read; past it the
#: stream is closed without (the rest of) the close. The server's ``CONTROL_TIMEOUT``.
#: The reader's own control frames (a pong, its answer to the server's close) are bounded
#: the same way once their first byte is due to go out.
CLOSE_SEND_TIMEOUT = 5.0
#: Bytes asked of the stream per read (trio's own default): a catch-up page or a burst of
#: events comes in one read, not in trio-websocket's 4 KiB slices.
RECEIVE_SIZE = 65536

_ABNORMAL = CloseReason(CloseCode.ABNORMAL_CLOSURE, None)


async def upgrade(
    stream: trio.abc.Stream,
    *,
    host: str,
    resource: str,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> ClientWebSocket:
    """The HTTP/1.1 upgrade (RFC 6455 §4.1) over a connected ``stream``: ``host`` is the
    ``Host`` header, ``resource`` the request target.

    Raises ``ConnectionRejected`` (status, headers, body) if the server answers anything but
    101, ``HandshakeError`` if its answer is malformed or the stream ends or breaks first.
    Does not close ``stream`` on error: the caller opened it."""
    handshake = H11Handshake(ConnectionType.CLIENT)
    try:
        await stream.send_all(handshake.send(Request(host=host, target=resource)))
        status = 0
        headers: tuple[tuple[bytes, bytes], ...] = ()
        body = bytearray()
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            handshake.receive_data(bytes(data) or None)
            for event in handshake.events():
                if isinstance(event, AcceptConnection):
                    # wsproto made the frame-level connection, fed with the bytes that came
                    # after the 101; the handshake object is dropped with this frame.
                    connection = handshake.connection
                    assert connection is not None
                    ws = ClientWebSocket(stream, connection, max_message_size=max_message_size)
                    await ws._handle_events()  # frames that came with the 101
                    return ws
                if isinstance(event, RejectConnection):
                    status, headers = event.status_code, tuple(event.headers)
                    if not event.has_body:
                        raise ConnectionRejected(status, headers, None)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise ConnectionRejected(status, headers, bytes(body))
            if not data:
                raise HandshakeError("the server closed the connection during the upgrade")
    except (RemoteProtocolError, trio.BrokenResourceError) as error:
        raise HandshakeError(f"the upgrade failed: {error}") from error


class ClientWebSocket:
    """An open client WebSocket (made by ``upgrade``). See the module's docstring for what
    holds across tasks and after a close."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: Connection,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.stream = stream
        self._protocol = connection
        self._max_message_size = max_message_size
        #: Complete messages read but not yet returned.
        self._messages: deque[bytes | str] = deque()
        #: The fragments of the message being assembled, and their total length.
        self._parts: list[bytes | str] = []
        self._size = 0
        self._send_lock = trio.Lock()
        self._close_reason: CloseReason | None = None
        #: A task is inside ``stream.receive_some``; ``aclose`` waits in ``_read_done``
        #: for it rather than read beside it (trio allows one reader).
        self._receiving = False
        self._read_done = trio.lowlevel.ParkingLot()
        self._stream_closed = False
        #: ``_handle_events`` did not finish (cancelled): wsproto may hold events.
        self._interrupted = False
        #: A frame was cut short (its write cancelled part way): nothing may follow it.
        self._torn = False

    @property
    def closed(self) -> CloseReason | None:
        """Why it closed (the server's code and reason, ours, or 1006), None while open."""
        return self._close_reason

    async def get_message(self) -> bytes | str:
        """The next complete message. A message already read is returned without a
        checkpoint (one read often brings several); otherwise this reads the stream.

        Raises ``ConnectionClosed`` once closed (after the messages that came before the
        server's close)."""
        messages = self._messages
        while not messages:
            if self._close_reason is not None:
                raise ConnectionClosed(self._close_reason)
            await self._receive()
        return messages.popleft()

    async def send_message(self, message: bytes | str) -> None:
        """Send one message, as one frame. ``ConnectionClosed`` if closed or closing, or if
        the stream broke (the reason is then read by ``get_message``)."""
        if isinstance(message, str):
            await self._send(TextMessage(data=message))
        else:
            await self._send(BytesMessage(data=message))

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close: send a close frame, wait up to ``DISCONNECT_TIMEOUT`` for the server's (its
        reader sees it if a task is reading, else this reads), then close the stream, always,
        cancelled or not. Unread messages are dropped. Idempotent; does not raise for an
        already closed or broken connection; ``DisconnectionTimeout`` if the server did not
        answer in time, or did not take our close frame within ``CLOSE_SEND_TIMEOUT``.

        Cancelled, it still sends the close frame whole (after a frame of another task that
        is going out), shielded but within ``CLOSE_SEND_TIMEOUT``; then gives up waiting for
        the server's reply, closes the stream and raises the cancellation."""
        if self._stream_closed:
            return
        try:
            with trio.CancelScope(deadline=trio.current_time() + DISCONNECT_TIMEOUT) as scope:
                await self._close_handshake(code, reason)
        finally:
            await self._close_stream()
        if scope.cancelled_caught:
            raise DisconnectionTimeout from None

    # --- reading ----------------------------------------------------------------------------

    async def _receive(self) -> None:
        """One read from the stream, its events handled."""
        self._receiving = True
        try:
            # Unless the last handling was cancelled (in a pong's send) with events left in
            # wsproto: those first, without a read that could wait for more.
            if not self._interrupted:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""  # reset, or closed by ``aclose``: the end, 1006 unless closed
                state = self._protocol.state
                if not data:
                    self._protocol.receive_data(None)  # an end without a close frame: 1006
                elif state is ConnectionState.OPEN or state is ConnectionState.LOCAL_CLOSING:
                    self._protocol.receive_data(cast(bytes, data))
            self._interrupted = True
            await self._handle_events()
            self._interrupted = False
        finally:
            self._receiving = False
            if self._read_done:
                self._read_done.unpark_all()

    async def _handle_events(self) -> None:
        messages = self._messages
        for event in self._protocol.events():
            if type(event) is BytesMessage or type(event) is TextMessage:
                # bytes, not bytearray: wsproto copies a frame's payload out (and no
                # extension that could change that is negotiated).
                data = cast("bytes | str", event.data)
                if self._parts or not event.message_finished:
                    whole = self._assemble(event)
                    if whole is None:
                        continue
                    data = whole
                if len(data) > self._max_message_size:
                    await self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                    return
                if self._close_reason is None:  # after our own close: dropped
                    messages.append(data)
            elif isinstance(event, Ping):
                await self._send_control(event.response(), whole=True)
            elif isinstance(event, CloseConnection):
                await self._handle_close(event)
                return
            # A Pong: we send no pings (the server does), nothing to match.

    def _assemble(self, event: BytesMessage | TextMessage) -> bytes | str | None:
        """A fragment added; the whole message once its last fragment came (None before)."""
        self._parts.append(cast("bytes | str", event.data))
        self._size += len(event.data)
        if not event.message_finished and self._size <= self._max_message_size:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    async def _handle_close(self, event: CloseConnection) -> None:
        state = self._protocol.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The server closes: its code and reason are why; answer (RFC 6455 §5.5.1).
            if self._close_reason is None:
                self._close_reason = CloseReason(event.code, event.reason or None)
            await self._send_control(event.response(), whole=True)
        elif state is ConnectionState.OPEN:
            # wsproto could not parse the server's frames: fail the connection with its code.
            await self._fail(event.code, event.reason or "")
        elif self._close_reason is None:
            # CLOSED: the end of the stream without a close frame (1006), or the server's
            # answer to our close, which set the reason already.
            self._close_reason = CloseReason(event.code, event.reason or None)

    async def _fail(self, code: int, reason: str) -> None:
        """Close from our side for the server's fault (a protocol error, a message too big);
        ``get_message`` raises with this code, as trio-websocket did, after the messages
        that came before."""
        self._parts, self._size = [], 0
        if self._close_reason is None:
            self._close_reason = CloseReason(code, reason or None)
        await self._send_control(CloseConnection(code=code, reason=reason), whole=True)

    # --- writing ----------------------------------------------------------------------------

    async def _send(self, event: Event) -> None:
        lock = self._send_lock
        # The lock's own checkpoint spared when free: ``send_all`` is one anyway.
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._close_reason is not None or self._protocol.state is not ConnectionState.OPEN:
                raise ConnectionClosed(self._close_reason or _ABNORMAL)
            if self._torn:
                raise ConnectionClosed(_ABNORMAL)
            data = self._protocol.send(event)
            try:
                await self._write(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(self._close_reason or _ABNORMAL) from None
        finally:
            lock.release()

    async def _send_control(self, event: Pong | CloseConnection, *, whole: bool = False) -> None:
        """A pong or a close, if wsproto's state allows it and no frame was torn; a broken
        stream is left for the reader to find.

        ``whole`` (the reader's frames): once the frame is due to go out, its write is
        shielded from cancellation for up to ``CLOSE_SEND_TIMEOUT``. A reader cancelled
        halfway through a pong (a caller's ``move_on_after`` around ``get_message`` while the
        server was not reading) would otherwise tear the stream, and the connection's later
        close could not go out: the server would see 1006. The wait for the lock stays
        cancellable: nothing has gone out yet (a close not answered is then sent by
        ``aclose``). ``_close_handshake`` shields its close itself, with its own deadline."""
        async with self._send_lock:
            # A cancel that landed as the lock was handed to us is taken before wsproto's
            # state moves on: a close is then still due, for ``_close_handshake`` to send.
            await trio.lowlevel.checkpoint_if_cancelled()
            state = self._protocol.state
            if not self._torn and (
                state is ConnectionState.OPEN
                or (state is ConnectionState.REMOTE_CLOSING and isinstance(event, CloseConnection))
            ):
                data = self._protocol.send(event)
                shield = trio.CancelScope(
                    deadline=trio.current_time() + CLOSE_SEND_TIMEOUT if whole else math.inf,
                    shield=whole,
                )
                with (
                    shield,
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await self._write(data)

    async def _write(self, data: bytes) -> None:
        """Write one whole frame (the send lock held). Interrupted once part of it went out,
        the stream is torn (``_torn``)."""
        stream = self.stream
        sent = 0
        try:
            if isinstance(stream, trio.SocketStream):
                # The socket written directly rather than with ``send_all``, to know whether
                # any of the frame went out if cancelled (as the server's transport does).
                sock = stream.socket
                with memoryview(data) as view:
                    while sent < len(view):
                        sent += await sock.send(view[sent:])
            else:
                # Other streams (TLS) cannot tell how much went out: a cancellation pending
                # is taken before the first byte, any later one tears the frame.
                await trio.lowlevel.checkpoint_if_cancelled()
                sent = -1
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except OSError as error:  # the socket's, as ``SocketStream.send_all`` translates them
            raise trio.BrokenResourceError(f"the stream broke: {error}") from error
        except BaseException:
            if sent:
                self._torn = True
            raise

    # --- closing ----------------------------------------------------------------------------

    async def _close_handshake(self, code: int, reason: str) -> None:
        self._messages.clear()
        close: CloseConnection | None = None
        if self._close_reason is None:
            self._close_reason = CloseReason(code, reason or None)
            close = CloseConnection(code=code, reason=reason)
        elif (
            self._protocol.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
            and self._close_reason.code != CloseCode.ABNORMAL_CLOSURE
        ):
            # A close recorded but not sent: the server's, read and not answered, or our
            # verdict on a server that broke the protocol or sent a message too big
            # (``_fail``). The reader was cancelled waiting for the send lock to send it.
            # Sent here, or the server sees 1006 (and we would wait for its close in vain).
            due = self._close_reason
            close = CloseConnection(code=due.code, reason=due.reason or "")
        if close is not None:
            # Shielded: a cancelled caller (its ``move_on_after``, its nursery) must not cut
            # the close short, or the server sees 1006 (or half a frame), not our code. The
            # wait for a frame of another task going out is shielded too; past the deadline
            # the close is not sent, or is torn, and ``aclose`` closes the stream.
            deadline = trio.current_time() + CLOSE_SEND_TIMEOUT
            with trio.CancelScope(deadline=deadline, shield=True) as sending:
                await self._send_control(close)
            # The caller's cancellation, held off while the close went out, is taken here:
            # the wait for the server's reply is given up, ``aclose`` closes the stream.
            await trio.lowlevel.checkpoint_if_cancelled()
            if sending.cancelled_caught:
                raise DisconnectionTimeout  # the server did not take our close in time
        if self._torn:
            return  # no close could go out after a frame cut short: none will come back
        # RFC 6455 §7.1.1: wait for the server's close, reading for it unless another task
        # is; then ``aclose`` closes the TCP connection (as trio-websocket's did), rather
        # than wait for the server to.
        while self._protocol.state is not ConnectionState.CLOSED:
            if self._receiving:
                await self._read_done.park()
            else:
                await self._receive()

    async def _close_stream(self) -> None:
        self._stream_closed = True
        stream = self.stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.close()  # synchronous: no shielded checkpoint needed
        else:
            await trio.aclose_forcefully(stream)
