"""The SDK's client WebSocket against a wsproto server endpoint, in memory: the upgrade and
its refusal, messages (batched, fragmented, too big), pings, closes from either side and
their codes, a broken stream, and the close that always closes the stream; a cancelled
close still sends its whole close frame, and no frame ever follows one cut short."""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
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
from wsproto.frame_protocol import FrameProtocol, Opcode

from client import websocket
from client.websocket import (
    ClientWebSocket,
    ConnectionClosed,
    ConnectionRejected,
    DisconnectionTimeout,
    HandshakeError,
    upgrade,
)

E = TypeVar("E", bound=Event)


class Server:
    """The other end: wsproto's server side over one half of a memory stream pair."""

    def __init__(
        self, stream: trio.abc.Stream, ws: WSConnection | Connection | None = None
    ) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER) if ws is None else ws
        self._unread: deque[Event] = deque()

    async def request(self) -> Request:
        event = await self.next()
        assert isinstance(event, Request)
        return event

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(self.ws.send(e) for e in events))

    async def next(self) -> Event:
        while not self._unread:
            data = await self.stream.receive_some()
            self.ws.receive_data(bytes(data) or None)
            self._unread.extend(self.ws.events())
        return self._unread.popleft()

    async def until(self, kind: type[E]) -> E:
        while True:
            event = await self.next()
            if isinstance(event, kind):
                return event


async def opened(
    nursery: trio.Nursery, *first: Event, max_message_size: int = websocket.MAX_MESSAGE_SIZE
) -> tuple[ClientWebSocket, Server]:
    """An upgraded pair; ``first`` is sent in the same write as the server's 101."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)

    async def accept() -> None:
        request = await server.request()
        assert (request.host, request.target) == ("example.test:8080", "/r?x=1")
        await server.send(AcceptConnection(), *first)

    nursery.start_soon(accept)
    ws = await upgrade(
        client_stream,
        host="example.test:8080",
        resource="/r?x=1",
        max_message_size=max_message_size,
    )
    return ws, server


async def test_messages_both_ways_and_frames_sent_with_the_101(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery, BytesMessage(data=b"early"))
    assert await ws.get_message() == b"early"
    await ws.send_message(b"\x00bin")
    await ws.send_message("text")
    assert (await server.until(BytesMessage)).data == b"\x00bin"
    assert (await server.until(TextMessage)).data == "text"
    await server.send(TextMessage(data="hé"))
    assert await ws.get_message() == "hé"


async def test_the_messages_of_one_read_come_without_a_checkpoint(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    await server.send(*(BytesMessage(data=bytes([i])) for i in range(5)))
    assert await ws.get_message() == b"\x00"
    with trio.testing.assert_no_checkpoints():
        rest = [await ws.get_message() for _ in range(4)]
    assert rest == [b"\x01", b"\x02", b"\x03", b"\x04"]


async def test_fragments_are_assembled(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    await server.send(
        BytesMessage(data=b"ab", message_finished=False),
        BytesMessage(data=b"cd", message_finished=False),
        BytesMessage(data=b"e"),
        TextMessage(data="x", message_finished=False),
        TextMessage(data="y"),
    )
    assert await ws.get_message() == b"abcde"
    assert await ws.get_message() == "xy"


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_too_big_closes_1009(nursery: trio.Nursery, fragmented: bool) -> None:
    ws, server = await opened(nursery, max_message_size=4)
    if fragmented:
        await server.send(
            BytesMessage(data=b"abc", message_finished=False), BytesMessage(data=b"de")
        )
    else:
        await server.send(BytesMessage(data=b"abcde"))
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    assert caught.value.reason is not None and caught.value.reason.code == 1009
    close = await server.until(CloseConnection)
    assert close.code == 1009


async def test_a_ping_is_answered_while_reading(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    await server.send(Ping(payload=b"p1"), BytesMessage(data=b"m"))
    assert await ws.get_message() == b"m"
    pong = await server.until(Pong)
    assert pong.payload == b"p1"


async def test_the_servers_close_comes_after_its_messages_with_its_code(
    nursery: trio.Nursery,
) -> None:
    ws, server = await opened(nursery)
    await server.send(BytesMessage(data=b"last"), CloseConnection(code=4050, reason="bye"))
    assert await ws.get_message() == b"last"
    for _ in range(2):  # and again: it stays closed
        with pytest.raises(ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason is not None
        assert (caught.value.reason.code, caught.value.reason.reason) == (4050, "bye")
    answer = await server.until(CloseConnection)
    assert answer.code == 4050
    with pytest.raises(ConnectionClosed):
        await ws.send_message(b"late")
    with trio.testing.assert_checkpoints():
        await ws.aclose()  # answered already: closes the stream at once
    assert ws.closed is not None and ws.closed.code == 4050


async def test_an_end_without_a_close_frame_is_1006(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    await server.stream.aclose()
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    assert caught.value.reason is not None
    assert (caught.value.reason.code, caught.value.reason.reason) == (1006, None)
    await ws.aclose()


async def test_a_send_on_a_broken_stream_is_connection_closed(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    await server.stream.aclose()  # the peer gone: our sends break, our reads end
    with pytest.raises(ConnectionClosed) as caught:
        await ws.send_message(b"x")
    assert caught.value.reason is not None and caught.value.reason.code == 1006
    assert ws.closed is None  # what closed it is for the reader to find
    await ws.aclose()  # does not raise, nor wait
    assert ws.closed is not None and ws.closed.code == 1000


async def test_a_malformed_frame_from_the_server_fails_the_connection(
    nursery: trio.Nursery,
) -> None:
    ws, server = await opened(nursery)
    frame = FrameProtocol(client=False, extensions=[])._serialize_frame(Opcode.BINARY, b"x")
    frame[0] |= 0x40  # RSV1 set, no extension negotiated: RFC 6455 §5.2
    await server.stream.send_all(bytes(frame))
    with pytest.raises(ConnectionClosed) as caught:
        await ws.get_message()
    assert caught.value.reason is not None and caught.value.reason.code == 1002
    close = await server.until(CloseConnection)
    assert close.code == 1002


async def test_aclose_without_a_reader_waits_for_the_answer_and_closes_the_stream(
    nursery: trio.Nursery,
) -> None:
    ws, server = await opened(nursery)
    await server.send(BytesMessage(data=b"unread"))

    async def answer() -> None:
        close = await server.until(CloseConnection)
        assert (close.code, close.reason) == (4000, "done")
        await server.send(close.response())

    nursery.start_soon(answer)
    await ws.aclose(4000, "done")
    assert ws.closed is not None and ws.closed.code == 4000
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"")
    with pytest.raises(ConnectionClosed):
        await ws.get_message()  # the unread message was dropped
    await ws.aclose()  # idempotent


async def test_aclose_lets_a_running_reader_see_the_answer(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    reader_saw: list[int] = []

    async def reader() -> None:
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            reader_saw.append(closed.reason.code)

    async def answer() -> None:
        close = await server.until(CloseConnection)
        await server.send(close.response())

    nursery.start_soon(reader)
    nursery.start_soon(answer)
    await trio.testing.wait_all_tasks_blocked()
    await ws.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert reader_saw == [1000]


async def test_aclose_gives_up_after_the_disconnect_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ws, _ = await opened(nursery)  # a server that never answers the close
    started = trio.current_time()
    with pytest.raises(DisconnectionTimeout):
        await ws.aclose()
    assert trio.current_time() - started == pytest.approx(websocket.DISCONNECT_TIMEOUT)
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"")


async def test_a_cancelled_aclose_still_closes_the_stream(nursery: trio.Nursery) -> None:
    ws, _ = await opened(nursery)
    with trio.CancelScope() as scope:
        scope.cancel()
        await ws.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"")


async def test_frames_of_concurrent_senders_never_interleave(nursery: trio.Nursery) -> None:
    ws, server = await opened(nursery)
    sizes = [70_000, 3, 200_000, 10]
    async with trio.open_nursery() as senders:
        for i, size in enumerate(sizes):
            senders.start_soon(ws.send_message, bytes([i]) * size)
    got = [(await server.until(BytesMessage)).data for _ in sizes]
    assert sorted(got, key=len) == sorted((bytes([i]) * s for i, s in enumerate(sizes)), key=len)


@pytest.mark.parametrize("body", [None, b"busy"])
async def test_a_refused_upgrade_is_connection_rejected(
    nursery: trio.Nursery, body: bytes | None
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)

    async def refuse() -> None:
        await server.request()
        headers = [(b"retry-after", b"1")]
        if body is None:
            await server.send(RejectConnection(status_code=503, headers=headers))
        else:
            headers.append((b"content-length", str(len(body)).encode()))
            await server.send(
                RejectConnection(status_code=503, headers=headers, has_body=True),
                RejectData(data=body),
            )

    nursery.start_soon(refuse)
    with pytest.raises(ConnectionRejected) as caught:
        await upgrade(client_stream, host="h", resource="/")
    assert caught.value.status_code == 503
    assert caught.value.body == (body or b"")  # a final response: a body, if empty
    assert (b"retry-after", b"1") in caught.value.headers


@pytest.mark.parametrize(
    "answer", [b"", b"HTTP/1.1 101 Switching Protocols\r\n", b"not http at all\r\n\r\n"]
)
async def test_an_upgrade_cut_short_or_malformed_is_a_handshake_error(
    nursery: trio.Nursery, answer: bytes
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def answer_and_hang_up() -> None:
        await server_stream.receive_some()
        await server_stream.send_all(answer)
        await server_stream.aclose()

    nursery.start_soon(answer_and_hang_up)
    with pytest.raises(HandshakeError) as caught:
        await upgrade(client_stream, host="h", resource="/")
    assert not isinstance(caught.value, ConnectionRejected)


class _Stuck(trio.abc.SendStream):
    """A send stream whose every send waits forever (a peer that stopped reading)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep_forever()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_read_cancelled_while_answering_a_ping_loses_no_message(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The reader cancelled in the wait for the send lock (another task's frame going out),
    with a message read after the ping: that message comes from what was read, with no
    second read. (A pong already going out is sent whole: see the tests at the end.)"""
    ws, server = await opened(nursery)
    stream = ws.stream
    assert isinstance(stream, trio.StapledStream)
    sending, stream.send_stream = stream.send_stream, _Stuck()
    sender = trio.CancelScope()

    async def stuck_sender() -> None:
        with sender, contextlib.suppress(ConnectionClosed):
            await ws.send_message(b"x")

    nursery.start_soon(stuck_sender)
    await trio.testing.wait_all_tasks_blocked()
    await server.send(Ping(payload=b"p"), BytesMessage(data=b"m"))
    with trio.move_on_after(1) as caller:
        await ws.get_message()  # cancelled waiting for the lock, to send the pong
    assert caller.cancelled_caught
    sender.cancel()
    stream.send_stream = sending
    with trio.fail_after(5):
        assert await ws.get_message() == b"m"  # from what was read: no second read


@pytest.mark.parametrize("handed_over", [False, True], ids=["waiting", "handed-over"])
@pytest.mark.parametrize("too_big", [False, True], ids=["close", "too-big"])
async def test_the_servers_close_is_answered_when_the_reader_is_cancelled_in_the_lock_wait(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, handed_over: bool, too_big: bool
) -> None:
    """The server's close read while a sender held the send lock, and the reader cancelled
    in its wait for the lock, or as the lock was handed to it: no close frame went out, and
    ``aclose`` took the close for answered (waiting for a CLOSED state that never came, or
    finding wsproto's state moved on with nothing sent). Now ``aclose`` answers it. The same
    for our own verdict on the server (a second review), a message too big (1009): no close
    went out and ``aclose`` waited 60 s for the server's."""
    ws, server = await opened(nursery, max_message_size=4)
    lock = ws._send_lock
    lock.acquire_nowait()  # a sender's frame going out
    reading = trio.CancelScope()

    async def reader() -> None:
        with reading:
            await ws.get_message()

    nursery.start_soon(reader)
    if too_big:
        await server.send(BytesMessage(data=b"abcde"))
    else:
        await server.send(CloseConnection(code=4050, reason="bye"))
    await trio.testing.wait_all_tasks_blocked()
    assert lock.statistics().tasks_waiting == 1  # the reader, to answer
    if handed_over:
        lock.release()  # the reader holds it now, but has not run yet
        reading.cancel()
    else:
        reading.cancel()
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
    await trio.testing.wait_all_tasks_blocked()
    assert reading.cancelled_caught
    started = trio.current_time()
    async with trio.open_nursery() as closing:
        closing.start_soon(ws.aclose)
        answer = await server.until(CloseConnection)
        if too_big:
            await server.send(answer.response())  # the server's reply to our close
    assert trio.current_time() - started < 1  # not DISCONNECT_TIMEOUT
    expected = (1009, "message too big") if too_big else (4050, "bye")
    assert (answer.code, answer.reason) == expected
    assert ws.closed is not None and ws.closed.code == expected[0]


# --- a cancelled close ---------------------------------------------------------------------


class _Valve(trio.abc.SendStream):
    """The client's sending side when the server stopped reading: while shut, a write puts
    the first ``room`` bytes of its data on the wire (what the socket buffer took) and waits
    for the server to read again; cancelled then, the rest never goes out, as on a socket.
    Closed, it ends the server's stream and fails a write waiting in it."""

    def __init__(self, inner: trio.abc.SendStream, room: int = 1) -> None:
        self.inner = inner
        self.room = room
        self.opened = trio.Event()  # the server reads again
        self.blocked = trio.Event()  # a write waits
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        if not self.opened.is_set():
            await self.inner.send_all(data[: self.room])
            data = data[self.room :]
            self.blocked.set()
            await self.opened.wait()
            if self._closed:
                raise trio.ClosedResourceError
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.opened.wait()

    async def aclose(self) -> None:
        self._closed = True
        self.opened.set()
        await self.inner.aclose()


def _valve(ws: ClientWebSocket) -> _Valve:
    stream = ws.stream
    assert isinstance(stream, trio.StapledStream)
    valve = _Valve(stream.send_stream)
    stream.send_stream = valve
    return valve


async def _to_the_end(server: Server) -> tuple[bytes, list[Event]]:
    """All the bytes the server gets until the client's end, and what wsproto makes of them."""
    received = bytearray()
    with trio.fail_after(30):
        while chunk := await server.stream.receive_some():
            received += chunk
    server.ws.receive_data(bytes(received))
    events = list(server.ws.events())
    server.ws.receive_data(None)  # (its 1006 would come before the events of the bytes)
    return bytes(received), events + list(server.ws.events())


def _closes(events: list[Event]) -> list[tuple[int, str | None]]:
    return [(e.code, e.reason or None) for e in events if isinstance(e, CloseConnection)]


@asynccontextmanager
async def over_a_socket_pair() -> AsyncIterator[tuple[ClientWebSocket, Server]]:
    """An open pair over a real socket pair (no upgrade), small buffers: a big frame blocks."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        ws = ClientWebSocket(stream, Connection(ConnectionType.CLIENT))
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
        yield ws, Server(peer, Connection(ConnectionType.SERVER))


async def test_a_cancelled_aclose_still_sends_its_whole_close_frame(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The defect: the caller's ``move_on_after`` expired while the close frame was being
    written (the server not reading for a while), the write was cut short and the stream
    closed, and the server saw half a close frame and 1006. Now the close goes out whole
    (shielded) once the server reads again, then the cancellation goes on to the caller."""
    ws, server = await opened(nursery)
    valve = _valve(ws)

    async def server_reads_again() -> None:
        await trio.sleep(2)
        valve.opened.set()

    nursery.start_soon(server_reads_again)
    started = trio.current_time()
    returned = False
    with trio.move_on_after(1) as caller:
        await ws.aclose(4001, "bye")
        returned = True
    assert caller.cancelled_caught and not returned  # the cancellation was not swallowed
    assert trio.current_time() - started == pytest.approx(2)  # until the close went out
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"")
    _, events = await _to_the_end(server)
    assert _closes(events)[0] == (4001, "bye")


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "not-cancelled"])
async def test_a_close_the_server_never_takes_is_given_up_after_the_close_send_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, cancelled: bool
) -> None:
    """The shield is bounded: a server that never reads again holds a cancelled ``aclose``
    ``CLOSE_SEND_TIMEOUT``, not forever; an uncancelled one then raises
    ``DisconnectionTimeout`` (not after the whole ``DISCONNECT_TIMEOUT``). The stream is
    closed either way."""
    ws, server = await opened(nursery)
    _valve(ws)  # never opened
    started = trio.current_time()
    if cancelled:
        with trio.move_on_after(1) as caller:
            await ws.aclose(4001, "bye")
        assert caller.cancelled_caught
    else:
        with pytest.raises(DisconnectionTimeout):
            await ws.aclose(4001, "bye")
    assert trio.current_time() - started == pytest.approx(websocket.CLOSE_SEND_TIMEOUT)
    received, events = await _to_the_end(server)
    assert len(received) == 1  # the close frame's first byte, then the end
    assert _closes(events) == [(1006, None)]


@pytest.mark.parametrize("when", ["before-the-call", "in-the-reply-wait"])
async def test_a_cancelled_aclose_sends_its_close_closes_the_socket_and_raises(
    autojump_clock: trio.testing.MockClock, when: str
) -> None:
    """Cancelled before it is called (a cancelled nursery's cleanup), or while it waits for
    the server's reply: the close frame went out, the socket is closed (no fd left open)
    and the cancellation goes on to the caller. Before, an already cancelled ``aclose`` sent
    no close at all (the server saw 1006)."""
    async with over_a_socket_pair() as (ws, server):
        stream = ws.stream
        assert isinstance(stream, trio.SocketStream)
        caller = trio.CancelScope(deadline=trio.current_time() + 1)
        if when == "before-the-call":
            caller.cancel()
        started = trio.current_time()
        returned = False
        with caller:
            await ws.aclose(4001, "bye")
            returned = True
        assert caller.cancelled_caught and not returned
        assert trio.current_time() - started == pytest.approx(0 if when == "before-the-call" else 1)
        assert stream.socket.fileno() == -1
        _, events = await _to_the_end(server)
        assert _closes(events)[0] == (4001, "bye")


@pytest.mark.parametrize("sender", ["finishes", "cancelled-too", "stuck"])
async def test_a_cancelled_aclose_never_interleaves_with_a_frame_going_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, sender: str
) -> None:
    """``aclose`` cancelled while a sender's frame is half out (the server stopped reading):
    the close waits for that frame, shielded, and follows it whole when the server reads
    again ("finishes"; before, the stream was closed under the sender and the server saw
    1006). If the sender is cancelled too (their nursery is), its frame is cut short and no
    byte may follow it: the stream is closed without a close frame. A sender that never
    finishes holds ``aclose`` no longer than ``CLOSE_SEND_TIMEOUT``."""
    ws, server = await opened(nursery)
    valve = _valve(ws)
    message = bytes(1000)
    outcome: list[str] = []

    async def server_reads_again() -> None:
        await trio.sleep(2)
        valve.opened.set()

    if sender != "stuck":
        nursery.start_soon(server_reads_again)

    async def send() -> None:
        try:
            await ws.send_message(message)
            outcome.append("sent")
        except ConnectionClosed:
            outcome.append("closed")

    closer = trio.CancelScope()

    async def close() -> None:
        with closer:
            await ws.aclose(4001, "bye")
            outcome.append("aclose returned")

    started = trio.current_time()
    with trio.fail_after(30):
        async with trio.open_nursery() as tasks:
            tasks.start_soon(send)
            await valve.blocked.wait()  # the first byte of its frame is out, the rest waits
            tasks.start_soon(close)
            await trio.testing.wait_all_tasks_blocked()
            assert ws._send_lock.statistics().tasks_waiting == 1  # aclose, for that frame
            if sender == "cancelled-too":
                tasks.cancel_scope.cancel()
            else:
                closer.cancel()
    elapsed = trio.current_time() - started
    received, events = await _to_the_end(server)
    if sender == "finishes":
        assert outcome == ["sent"] and closer.cancelled_caught
        assert elapsed == pytest.approx(2)
        assert [e.data for e in events if isinstance(e, BytesMessage)] == [message]
        assert _closes(events)[0] == (4001, "bye")
    else:
        assert outcome == ([] if sender == "cancelled-too" else ["closed"])
        assert elapsed == pytest.approx(0 if sender == "cancelled-too" else 5)
        assert len(received) == 1  # the cut frame's first byte, and nothing after it
        assert _closes(events) == [(1006, None)]
    with pytest.raises(trio.ClosedResourceError):
        await ws.stream.send_all(b"")


async def test_no_frame_follows_one_cut_short_on_a_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A send cancelled part way through its frame (the server not reading) leaves half a
    frame on the wire: anything sent after it would be read as the rest of it. Before, the
    next send went out after it; now it raises ``ConnectionClosed``, and a cancelled
    ``aclose`` closes the socket without a close frame."""
    async with over_a_socket_pair() as (ws, server):
        size = 1 << 20
        with trio.move_on_after(1) as cut:
            await ws.send_message(bytes(size))
        assert cut.cancelled_caught
        with trio.fail_after(30), pytest.raises(ConnectionClosed):
            await ws.send_message(b"next")  # (before: it went out, or blocked for good)
        with trio.CancelScope() as caller:
            caller.cancel()
            await ws.aclose(4001, "bye")
        assert caller.cancelled_caught
        stream = ws.stream
        assert isinstance(stream, trio.SocketStream) and stream.socket.fileno() == -1
        _, events = await _to_the_end(server)
        payload = b"".join(e.data for e in events if isinstance(e, BytesMessage))
        assert 0 < len(payload) < size
        assert payload == bytes(len(payload))  # the message's zeros, no other frame's bytes
        assert _closes(events) == [(1006, None)]


@pytest.mark.parametrize("over", ["memory", "socket"])
async def test_a_send_cancelled_before_its_first_byte_leaves_the_stream_whole(
    nursery: trio.Nursery, over: str
) -> None:
    """A send cancelled before any of its frame went out (a cancelled nursery's sender) cuts
    nothing: the close that follows goes out and is answered as usual."""
    async with over_a_socket_pair() as (ws, server):
        if over == "memory":
            ws, server = await opened(nursery)
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.send_message(b"never")
        assert scope.cancelled_caught

        got: list[tuple[int, str]] = []

        async def answer() -> None:
            close = await server.until(CloseConnection)
            got.append((close.code, close.reason))
            await server.send(close.response())

        nursery.start_soon(answer)
        with trio.fail_after(1):
            await ws.aclose(4001, "bye")
        assert got == [(4001, "bye")]
        assert ws.closed is not None and ws.closed.code == 4001


# --- a cancelled reader's own control frames -----------------------------------------------


async def test_a_reader_cancelled_in_its_pong_sends_it_whole_and_the_close_still_goes_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The defect: a caller's ``move_on_after`` around ``get_message`` expired while the
    reader was answering a ping and the server was not reading. The pong was cut short, the
    stream torn, and the connection's later close could not go out: the server saw 1006.
    Now the pong goes out whole once the server reads again, the cancellation lands after
    it, and ``aclose`` sends its close as usual."""
    ws, server = await opened(nursery)
    valve = _valve(ws)
    await server.send(Ping(payload=b"p"))

    async def server_reads_again() -> None:
        await trio.sleep(2)
        valve.opened.set()

    nursery.start_soon(server_reads_again)
    started = trio.current_time()
    with trio.move_on_after(1) as caller:
        await ws.get_message()
    assert caller.cancelled_caught  # the cancellation was not swallowed
    assert trio.current_time() - started == pytest.approx(2)  # until the pong went out
    with trio.move_on_after(10):  # (the test's server never answers the close)
        await ws.aclose(4001, "bye")
    _, events = await _to_the_end(server)
    assert [e.payload for e in events if isinstance(e, Pong)] == [b"p"]
    assert _closes(events)[0] == (4001, "bye")  # (then the end of the stream, 1006)


async def test_a_pong_the_server_never_takes_holds_a_cancelled_reader_no_longer_than_the_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The shield is bounded: with a server that never reads again, the cancelled reader
    returns after ``CLOSE_SEND_TIMEOUT``, the pong cut short, and nothing follows it."""
    ws, server = await opened(nursery)
    _valve(ws)  # never opened
    await server.send(Ping(payload=b"p"))
    started = trio.current_time()
    with trio.move_on_after(1) as caller:
        await ws.get_message()
    assert caller.cancelled_caught
    assert trio.current_time() - started == pytest.approx(websocket.CLOSE_SEND_TIMEOUT)
    with pytest.raises(ConnectionClosed):
        await ws.send_message(b"next")  # the stream is torn: no byte may follow
