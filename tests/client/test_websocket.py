"""The SDK's client WebSocket against a wsproto server endpoint, in memory: the upgrade and
its refusal, messages (batched, fragmented, too big), pings, closes from either side and
their codes, a broken stream, and the close that always closes the stream."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
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

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
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
    ws, server = await opened(nursery)
    stream = ws.stream
    assert isinstance(stream, trio.StapledStream)
    sending, stream.send_stream = stream.send_stream, _Stuck()
    await server.send(Ping(payload=b"p"), BytesMessage(data=b"m"))
    with trio.move_on_after(1):
        await ws.get_message()  # cancelled in the pong's send
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
