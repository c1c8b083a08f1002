"""One open WebSocket connection on the server: one reader, several writers.

The reader is the gateway's connection task: ``receive`` reads bytes from the stream, feeds
them to wsproto and walks its events, answering pings and the peer's close itself, and
returns the next complete message. It runs in the caller's task (no reader task, no
channel): several messages that arrive in one read are returned one after another, the
ones after the first from a small queue, without a task switch.

Writers are the connection's writer task, the heartbeat (``ping``) and the reader itself
(pong, close reply). Every byte goes out under one write lock, so frames never interleave;
the lock is a ``trio.Semaphore(1)`` because a partial write (``write_nowait``) takes it in
one task and the writer task releases it. Data frames are built by ``frames.frame`` (no
wsproto encode, see there); control frames by wsproto, which tracks the closing state.

A frame that has started going out must be finished before any other byte, or the peer
reads garbage. So a control frame is sent shielded from cancellation, bounded by
``CONTROL_TIMEOUT`` (past it the stream is aborted), and a data frame interrupted half way
(``_torn``) ends the connection without a close frame: nothing more may follow it.

Nothing here is kept for an idle connection beyond this object and wsproto's frame
parser: the write lock, the queue of ready messages, the fragments of a message and the
pings in flight are made when needed and dropped when no longer in use.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Final

import trio
from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from server.transport.frames import frame

__all__ = ["CLOSE_REPLY_TIMEOUT", "CONTROL_TIMEOUT", "ConnectionClosed", "WebSocket"]

#: How long a control frame (pong, close, ping) may take to go out before the stream is
#: aborted: it is sent shielded, so this (or the caller's deadline, if sooner) is what
#: bounds a cancelled sender.
CONTROL_TIMEOUT: Final = 5.0
#: How long ``aclose`` reads for the peer's close reply (RFC 6455 §7.1.1: the server
#: closes the TCP connection after the closing handshake).
CLOSE_REPLY_TIMEOUT: Final = 2.0
#: Bytes asked of the stream per read.
RECEIVE_BYTES: Final = 65536

_OPEN = ConnectionState.OPEN


class ConnectionClosed(Exception):
    """The WebSocket is closed: by the peer (its code and reason), by us (ours), because
    the peer broke the protocol (1002, 1007, 1009, ...) or because the stream broke or
    ended without a close frame (1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(int(code), reason)
        self.code = int(code)
        self.reason = reason


class _TooBig:
    """What ``_assemble`` returns for a message over the size limit."""


_TOO_BIG: Final = _TooBig()


class WebSocket:
    """An accepted server connection (``server.transport.handshake.Upgrade.accept``)."""

    __slots__ = (
        "_close",
        "_ended",
        "_lock",
        "_max_message_size",
        "_parts",
        "_parts_size",
        "_pings",
        "_proto",
        "_reading",
        "_ready",
        "_rest_pending",
        "_stream",
        "_torn",
    )

    def __init__(self, stream: trio.abc.Stream, proto: Protocol, *, max_message_size: int) -> None:
        self._stream = stream
        self._proto = proto
        self._max_message_size = max_message_size
        #: Why the connection closed, once it has (what ``receive`` raises).
        self._close: tuple[int, str] | None = None
        #: The stream is closed (``aclose`` ran or the stream was aborted).
        self._ended = False
        #: Made on first use: an idle connection never writes outside ``write_nowait``.
        self._lock: trio.Semaphore | None = None
        #: ``write_nowait`` took the lock for the rest of a partly written frame.
        self._rest_pending = False
        #: Half a frame is on the wire and its rest will never follow: no byte may.
        self._torn = False
        #: Complete messages read after the one ``receive`` returned.
        self._ready: deque[bytes | str] | None = None
        #: The fragments of a message still arriving, and their size.
        self._parts: list[bytes | str] | None = None
        self._parts_size = 0
        #: Pings in flight (payload: set when its pong comes).
        self._pings: dict[bytes, trio.Event] | None = None
        #: ``receive`` is running (``aclose`` reads for the close reply only if not).
        self._reading = False

    # -- state ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once no data frame can be sent any more."""
        return not self._open()

    @property
    def close_code(self) -> int | None:
        """The code the connection closed with (the peer's, ours, or 1006), once it has."""
        return None if self._close is None else self._close[0]

    def _open(self) -> bool:
        return self._close is None and not self._torn and self._proto.state is _OPEN

    def _close_due(self) -> bool:
        """A close was recorded (the peer's, or our verdict on the peer) and no close frame
        went out yet: wsproto still allows ours, and the stream is whole."""
        state = self._proto.state
        return (
            self._close is not None
            and self._close[0] != CloseReason.ABNORMAL_CLOSURE
            and not self._torn
            and (state is _OPEN or state is ConnectionState.REMOTE_CLOSING)
        )

    def _closed_error(self) -> ConnectionClosed:
        code, reason = self._close or (CloseReason.ABNORMAL_CLOSURE, "connection is not open")
        return ConnectionClosed(code, reason)

    def _set_closed(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        pings = self._pings
        if pings:
            for event in pings.values():  # ``ping`` finds its payload unanswered
                event.set()

    # -- writing ----------------------------------------------------------------------

    def _write_lock(self) -> trio.Semaphore:
        lock = self._lock
        if lock is None:
            lock = self._lock = trio.Semaphore(1)
        return lock

    def _drop_idle_lock(self, lock: trio.Semaphore) -> None:
        """Forget the lock once nobody holds or waits for it (~0.35 KiB, and every
        connection sends a ping each heartbeat): no task refers to it any more, so the next
        writer may make a new one without two locks ever being in use."""
        if self._lock is lock and lock.value == 1 and not lock.statistics().tasks_waiting:
            self._lock = None

    def write_nowait(self, payload: bytes) -> bytes | memoryview | None:
        """Try to write ``payload``'s binary frame now, without blocking.

        ``None``: written whole. ``payload`` itself: nothing written (a write in progress,
        the connection closing, the kernel's buffer full, or TLS: no socket to write to);
        queue it for ``write``. A ``memoryview``: the rest of a partly written frame; the
        write lock is now held for it, and it must be the next item given to ``write``.
        """
        lock = self._lock
        stream = self._stream
        if (lock is not None and lock.value == 0) or not self._open():
            return payload
        if not isinstance(stream, trio.SocketStream):
            return payload
        data = frame(payload)
        try:
            sent = os.write(stream.socket.fileno(), data)
        except OSError:
            # Would block, or the socket failed: the awaited path finds out which.
            return payload
        if sent == len(data):
            return None
        self._write_lock().acquire_nowait()  # free: checked above, and nothing ran since
        self._rest_pending = True
        return memoryview(data)[sent:]

    async def write(self, item: bytes | memoryview) -> None:
        """Send a queued item: a payload (framed here), or the rest of a partly written
        frame (``write_nowait`` holds the lock for it, released here whatever happens).
        ``ConnectionClosed`` when the connection is closed or the stream breaks."""
        if isinstance(item, memoryview):
            try:
                await self._send_all(item, started=True)
            finally:
                self._release_rest()
            return
        lock = self._write_lock()
        try:
            async with lock:
                if not self._open():
                    raise self._closed_error()
                await self._send_all(frame(item))
        finally:
            self._drop_idle_lock(lock)

    async def send_message(self, data: bytes) -> None:
        """Send one binary message (``write`` of a payload)."""
        await self.write(data)

    def abandon(self) -> None:
        """The rest of a partial write (``write_nowait``) will never be sent (the writer is
        gone): release the lock it holds. The frame is torn, so no other byte may follow
        (``aclose`` then only closes the stream). Idempotent."""
        if self._rest_pending:
            self._torn = True
            self._release_rest()

    def _release_rest(self) -> None:
        if self._rest_pending:
            self._rest_pending = False
            lock = self._lock
            assert lock is not None
            lock.release()
            self._drop_idle_lock(lock)

    async def _send_all(self, data: bytes | memoryview, *, started: bool = False) -> None:
        """Write all of ``data`` (the lock held). ``started``: the frame is partly on the
        wire already. Interrupted half way (cancelled), the frame is torn."""
        stream = self._stream
        sent = 0
        try:
            if isinstance(stream, trio.SocketStream):
                # Our own loop over the socket rather than ``send_all``, to know how much of
                # the frame went out if we are cancelled.
                sock = stream.socket
                view = memoryview(data)
                while sent < len(view):
                    sent += await sock.send(view[sent:])
            else:
                started = True  # a TLS stream cannot resume an interrupted send
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._torn = True
            self._set_closed(CloseReason.ABNORMAL_CLOSURE, "the stream broke")
            raise self._closed_error() from None
        except BaseException:
            if started or sent:
                self._torn = True
            raise

    async def _send_control(self, event: Ping | Pong | CloseConnection) -> bool:
        """Send a control frame under the lock; False if the state does not allow it any
        more (a ping or pong after a close, RFC 6455 §5.5.1; a second close). Waiting for
        the lock may be cancelled (no byte went out yet); the frame itself goes out
        shielded, within ``CONTROL_TIMEOUT``, or the stream is aborted."""
        lock = self._write_lock()
        try:
            async with lock:
                # A cancel that landed as the lock was handed to us (the reader woken by
                # drain or ``close_soon``) is taken here, before wsproto's state moves on:
                # the frame is then still due (``aclose`` sends a close that is), where the
                # shield below would meet a deadline of -inf and abort the stream.
                await trio.lowlevel.checkpoint_if_cancelled()
                if self._torn or self._ended:
                    raise self._closed_error()
                state = self._proto.state
                if isinstance(event, CloseConnection):
                    if state is not _OPEN and state is not ConnectionState.REMOTE_CLOSING:
                        return False
                elif state is not _OPEN or self._close is not None:
                    return False
                data = self._proto.send(event)
                # Shielded from cancellation, but never past the caller's own deadline (the
                # gateway gives a close 2 s, the heartbeat a ping one interval): a shield
                # would otherwise hold the caller up to CONTROL_TIMEOUT past it.
                deadline = min(
                    trio.current_time() + CONTROL_TIMEOUT, trio.current_effective_deadline()
                )
                with trio.CancelScope(deadline=deadline, shield=True) as scope:
                    await self._send_all(data)
                if scope.cancelled_caught:
                    await self._abort("a control frame timed out")
                    raise self._closed_error()
            return True
        finally:
            self._drop_idle_lock(lock)

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (a pong answers every ping sent before it too,
        RFC 6455 §5.5.3). ``ConnectionClosed`` if the connection closes first."""
        if payload is None:
            payload = os.urandom(4)
        if not self._open():
            raise self._closed_error()
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        if payload in pings:
            raise ValueError("a ping with this payload is in flight")
        answered = pings[payload] = trio.Event()
        unanswered = True
        try:
            if await self._send_control(Ping(payload=payload)):
                await answered.wait()
        finally:
            pings = self._pings
            if pings is not None:
                # Still there: not answered (closed, or cancelled).
                unanswered = pings.get(payload) is answered
                if unanswered:
                    del pings[payload]
                if not pings:
                    self._pings = None
        if unanswered:
            raise self._closed_error()

    def _ponged(self, payload: bytes) -> None:
        pings = self._pings
        if pings and payload in pings:
            for key in list(pings):
                pings.pop(key).set()
                if key == payload:
                    break

    # -- reading ----------------------------------------------------------------------

    async def receive(self) -> bytes | str:
        """The next complete message (binary: ``bytes``, text: ``str``), from one reader
        at a time. ``ConnectionClosed`` once the peer closed (after the close reply), the
        stream broke or ended (1006), or the peer broke the protocol (the connection is
        then closed with the code that says how: 1002, 1007, 1009 for a message over the
        size limit). Cancelled while waiting for bytes, nothing is lost: what was read
        stays in wsproto's buffer for the next call.

        A message already read returns at once, without a checkpoint: the gateway relies
        on that (a cancel of its scope cannot land between reading a message and its
        check of ``cancel_called``)."""
        if self._ready is not None:
            return self._pop_ready()
        if self._close is not None:
            raise self._closed_error()
        self._reading = True
        try:
            while True:
                message, control = self._walk_events()
                if control is not None:
                    message = await self._answer(message, control)
                if message is not None:
                    return message
                if self._close is not None:
                    raise self._closed_error()
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._set_closed(CloseReason.ABNORMAL_CLOSURE, "the stream ended")
                    raise self._closed_error()
                self._proto.receive_data(data if isinstance(data, bytes) else bytes(data))
        finally:
            self._reading = False

    def _pop_ready(self) -> bytes | str:
        ready = self._ready
        assert ready is not None
        message = ready.popleft()
        if not ready:
            self._ready = None  # an empty deque is ~0.6 KiB: not kept on an idle connection
        return message

    def _walk_events(self) -> tuple[bytes | str | None, list[Ping | CloseConnection] | None]:
        """Walk wsproto's events: the first complete message, and the pings and close to
        answer (``_answer``), if any; later messages wait in ``_ready``, pongs wake their
        pings. Nothing is awaited here (the usual path: one message, no control frame)."""
        first: bytes | str | None = None
        control: list[Ping | CloseConnection] | None = None
        for event in self._proto.events():
            if isinstance(event, BytesMessage | TextMessage):
                message = self._assemble(event)
                if message is None:
                    continue
                if message is _TOO_BIG:
                    control = [*(control or ()), CloseConnection(1009, "message too big")]
                    break
                assert not isinstance(message, _TooBig)
                if first is None:
                    first = message
                else:
                    ready = self._ready
                    if ready is None:
                        ready = self._ready = deque()
                    ready.append(message)
            elif isinstance(event, Pong):
                self._ponged(bytes(event.payload))
            elif isinstance(event, Ping):
                control = [*(control or ()), event]
            elif isinstance(event, CloseConnection):
                # Recorded before anything is awaited: if answering is cut short, ``aclose``
                # answers with this code.
                self._set_closed(event.code, event.reason or "")
                control = [*(control or ()), event]
                break  # nothing after a close counts
        return first, control

    async def _answer(
        self, first: bytes | str | None, control: list[Ping | CloseConnection]
    ) -> bytes | str | None:
        """Answer pings and a close; ``first`` waits in ``_ready`` meanwhile, so a cancel
        while answering loses no message. The next message, if any."""
        if first is not None:
            ready = self._ready
            if ready is None:
                ready = self._ready = deque()
            ready.appendleft(first)
        for event in control:
            if isinstance(event, Ping):
                await self._send_control(event.response())  # not after a close
            else:
                await self._closing(event)
        return self._pop_ready() if self._ready is not None else None

    async def _closing(self, event: CloseConnection) -> None:
        """A close: the peer's (answered), the reply to ours, or wsproto's verdict that the
        peer broke the protocol (the state is still OPEN then: we fail the connection with
        that code, RFC 6455 §7.1.7), or a message over the size limit (1009)."""
        state = self._proto.state
        self._set_closed(event.code, event.reason or "")
        if state is ConnectionState.REMOTE_CLOSING:
            with contextlib.suppress(ConnectionClosed):
                await self._send_control(event.response())
        elif state is _OPEN:
            with contextlib.suppress(ConnectionClosed):
                await self._send_control(CloseConnection(code=event.code, reason=event.reason))

    def _assemble(self, event: BytesMessage | TextMessage) -> bytes | str | _TooBig | None:
        """A complete message, ``None`` while fragments arrive, or ``_TOO_BIG``."""
        data: bytes | bytearray | str = event.data
        parts = self._parts
        if parts is None and event.message_finished:
            if len(data) > self._max_message_size:
                return _TOO_BIG
            return bytes(data) if isinstance(data, bytearray) else data
        size = self._parts_size + len(data)
        if size > self._max_message_size:
            self._parts, self._parts_size = None, 0
            return _TOO_BIG
        if parts is None:
            parts = self._parts = []
        parts.append(bytes(data) if isinstance(data, bytearray) else data)
        self._parts_size = size
        if not event.message_finished:
            return None
        self._parts, self._parts_size = None, 0
        if isinstance(event, TextMessage):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if isinstance(part, bytes))

    # -- closing ----------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close: our close frame if none was sent either way, then (if no ``receive`` is
        running) read up to ``CLOSE_REPLY_TIMEOUT`` for the peer's reply, then close the
        stream. Idempotent; never raises for a stream that is already broken. The write
        lock must be free (or freed soon): the gateway stops the writer first."""
        if self._ended:
            return
        try:
            if self._open():
                with contextlib.suppress(ConnectionClosed):
                    await self._send_control(CloseConnection(code=code, reason=reason))
                if not self._reading and self._close is None:
                    with trio.move_on_after(CLOSE_REPLY_TIMEOUT):
                        while True:  # until the reply (or the stream ends); data is dropped
                            await self.receive()
            elif self._close_due():
                # A close recorded but not sent: the peer's, read and not answered, or our
                # verdict on a peer that broke the protocol (1002, 1007) or sent a message
                # too big (1009). ``receive`` was cancelled waiting for the write lock to
                # send it (drain's or ``close_soon``'s wake-up cancels the reader while
                # ``conn.reading``, which covers that wait too). Sent here, or the peer
                # sees 1006.
                due_code, due_reason = self._close or (code, reason)
                with contextlib.suppress(ConnectionClosed):
                    await self._send_control(CloseConnection(code=due_code, reason=due_reason))
        except ConnectionClosed:
            pass
        finally:
            self._set_closed(code, reason)
            await self._abort(reason)

    async def _abort(self, reason: str) -> None:
        """Close the stream now (no closing handshake)."""
        self._set_closed(CloseReason.ABNORMAL_CLOSURE, reason)
        if not self._ended:
            self._ended = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await trio.aclose_forcefully(self._stream)
