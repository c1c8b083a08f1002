"""``server.transport.websocket`` over real loopback sockets: messages in (fragments,
limits, text), control frames (ping, pong, close), broken peers, and writes that keep
frames whole and in order, also across a partial write and under TLS."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import open_websocket
from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)

from server.connection import Connection
from server.transport import ConnectionClosed, WebSocket
from tests.server.transport.helpers import MAX_MESSAGE, RawClient, self_signed, start_server

BIG = 8 * 1024 * 1024  # far more than a loopback socket buffer: forces a partial write

Outcome = list[object]


async def _run(
    on_open: Callable[[WebSocket], Awaitable[None]],
    client: Callable[[int], Awaitable[None]],
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, on_open)
            try:
                await client(port)
            finally:
                await RawClient.close_all()
            nursery.cancel_scope.cancel()


def _reader(seen: Outcome, done: trio.Event) -> Callable[[WebSocket], Awaitable[None]]:
    """Reads until closed: the messages, then the ``ConnectionClosed``'s code and reason."""

    async def on_open(ws: WebSocket) -> None:
        try:
            while True:
                seen.append(await ws.receive())
        except ConnectionClosed as closed:
            seen.append((closed.code, closed.reason))
        finally:
            done.set()

    return on_open


async def _until_close(client: RawClient) -> list[Event]:
    """The client's events until the server's close frame or the end of the stream."""
    events: list[Event] = []
    while not any(isinstance(e, CloseConnection) for e in events):
        try:
            events += await client.events()
        except trio.BrokenResourceError:
            break
    return events


async def test_fragments_are_assembled_and_messages_of_one_read_come_in_order() -> None:
    seen: Outcome = []
    done = trio.Event()

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        data = raw.ws.send(BytesMessage(data=b"ab", message_finished=False))
        data += raw.ws.send(BytesMessage(data=b"cd", message_finished=True))
        data += raw.ws.send(BytesMessage(data=b"two"))
        data += raw.ws.send(TextMessage(data="thr", message_finished=False))
        data += raw.ws.send(TextMessage(data="ee", message_finished=True))
        await raw.stream.send_all(data)  # one write: one read on the server, likely
        await raw.send(CloseConnection(code=1000))
        await _until_close(raw)
        await done.wait()

    await _run(_reader(seen, done), client)
    assert seen == [b"abcd", b"two", "three", (1000, "")]


async def test_text_comes_back_as_str() -> None:
    seen: Outcome = []
    done = trio.Event()

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.send(TextMessage(data="héllo"))
        await raw.send(CloseConnection(code=1000))
        await done.wait()

    await _run(_reader(seen, done), client)
    assert seen == ["héllo", (1000, "")]


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_over_the_size_limit_closes_1009(fragmented: bool) -> None:
    seen: Outcome = []
    done = trio.Event()
    events: list[Event] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        payload = b"x" * (MAX_MESSAGE + 1)
        if fragmented:
            await raw.send(BytesMessage(data=payload[:1000], message_finished=False))
            await raw.send(BytesMessage(data=payload[1000:], message_finished=True))
        else:
            await raw.send(BytesMessage(data=payload))
        events.extend(await _until_close(raw))
        await done.wait()

    await _run(_reader(seen, done), client)
    assert len(seen) == 1 and isinstance(seen[0], tuple) and seen[0][0] == 1009
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [1009]


async def test_a_ping_from_the_client_is_answered() -> None:
    seen: Outcome = []
    done = trio.Event()
    events: list[Event] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.send(Ping(payload=b"are you there"))
        events.extend(await raw.events())
        await raw.send(CloseConnection(code=1000))
        await done.wait()

    await _run(_reader(seen, done), client)
    assert events == [Pong(payload=b"are you there")]
    assert seen == [(1000, "")]


async def test_a_ping_from_the_server_gets_its_pong() -> None:
    pinged = trio.Event()

    async def on_open(ws: WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, ws)  # the reader takes the pong
            await ws.ping(b"1")
            await ws.ping()
            pinged.set()
            nursery.cancel_scope.cancel()

    async def client(port: int) -> None:
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            await pinged.wait()  # trio-websocket's client answers pings

    await _run(on_open, client)
    assert pinged.is_set()


async def _drain(ws: WebSocket) -> None:
    try:
        while True:
            await ws.receive()
    except ConnectionClosed:
        pass


async def test_a_ping_in_flight_ends_with_connection_closed_when_the_peer_leaves() -> None:
    outcome: Outcome = []
    done = trio.Event()

    async def on_open(ws: WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, ws)
            try:
                await ws.ping(b"never answered")
            except ConnectionClosed as closed:
                outcome.append(closed.code)
            done.set()

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.events()  # the ping; not answered
        await raw.stream.aclose()
        await done.wait()

    await _run(on_open, client)
    assert outcome == [1006]


async def test_the_peers_close_is_answered_and_raised_with_its_code() -> None:
    seen: Outcome = []
    done = trio.Event()
    events: list[Event] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.send(BytesMessage(data=b"last"))
        await raw.send(CloseConnection(code=4321, reason="bye"))
        events.extend(await _until_close(raw))
        await done.wait()

    await _run(_reader(seen, done), client)
    assert seen == [b"last", (4321, "bye")]
    assert [(e.code, e.reason) for e in events if isinstance(e, CloseConnection)] == [(4321, "bye")]


async def test_an_abrupt_reset_raises_connection_closed_1006() -> None:
    seen: Outcome = []
    done = trio.Event()

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.send(BytesMessage(data=b"one"))
        raw.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await raw.stream.aclose()  # RST
        await done.wait()

    await _run(_reader(seen, done), client)
    assert seen[0] == b"one"
    assert isinstance(seen[1], tuple) and seen[1][0] == 1006


async def test_an_unmasked_frame_from_the_client_closes_1002() -> None:
    seen: Outcome = []
    done = trio.Event()
    events: list[Event] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        await raw.stream.send_all(b"\x82\x03abc")  # RFC 6455 §5.1: clients must mask
        events.extend(await _until_close(raw))
        await done.wait()

    await _run(_reader(seen, done), client)
    assert len(seen) == 1 and isinstance(seen[0], tuple) and seen[0][0] == 1002
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1002]


async def _read_messages(raw: RawClient, count: int) -> list[bytes | str]:
    got: list[bytes | str] = []
    parts: list[bytes] = []
    while len(got) < count:
        for event in await raw.events():
            if isinstance(event, BytesMessage):
                parts.append(bytes(event.data))
                if event.message_finished:
                    got.append(b"".join(parts))
                    parts.clear()
            elif isinstance(event, Ping):
                await raw.send(event.response())
    return got


async def test_small_frames_go_out_whole_without_yielding_and_in_order() -> None:
    written: Outcome = []
    sent = trio.Event()

    async def on_open(ws: WebSocket) -> None:
        for i in range(200):
            written.append(ws.write_nowait(i.to_bytes(4, "big")))
        await ws.send_message(b"done")  # the awaited path after ours
        sent.set()
        await _drain(ws)

    got: list[bytes | str] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        got.extend(await _read_messages(raw, 201))
        await raw.send(CloseConnection(code=1000))

    await _run(on_open, client)
    assert written == [None] * 200
    assert got == [i.to_bytes(4, "big") for i in range(200)] + [b"done"]


async def test_a_partial_write_holds_the_lock_until_the_rest_is_sent() -> None:
    big, after = b"a" * BIG, b"b" * 10
    ready = trio.Event()

    async def on_open(ws: WebSocket) -> None:
        rest = ws.write_nowait(big)
        assert isinstance(rest, memoryview) and 0 < len(rest) < BIG + 14
        # The lock is held for the rest: nothing else may start, not even a ping.
        assert ws.write_nowait(after) is after
        ready.set()
        async with trio.open_nursery() as writers:
            writers.start_soon(ws.send_message, b"tail")  # waits for the lock
            writers.start_soon(ws.ping, b"p")  # so does a control frame
            await trio.sleep(0.05)
            await ws.write(rest)
            await ws.write(after)
            nursery_reader = writers
            nursery_reader.start_soon(_drain, ws)  # takes the pong

    got: list[bytes | str] = []

    async def client(port: int) -> None:
        raw = await RawClient.open(port, rcvbuf=4096)
        await ready.wait()
        got.extend(await _read_messages(raw, 3))
        await raw.send(CloseConnection(code=1000))

    await _run(on_open, client)
    assert got == [big, b"tail", after]


async def test_nothing_is_written_after_close_and_writes_raise_connection_closed() -> None:
    outcome: Outcome = []

    async def on_open(ws: WebSocket) -> None:
        await ws.aclose(4000, "done")
        await ws.aclose()  # idempotent
        outcome.append(ws.write_nowait(b"y"))
        outcome.append(ws.close_code)
        with pytest.raises(ConnectionClosed):
            await ws.write(b"z")
        with pytest.raises(ConnectionClosed):
            await ws.receive()
        done.set()

    events: list[Event] = []
    done = trio.Event()

    async def client(port: int) -> None:
        raw = await RawClient.open(port)
        events.extend(await _until_close(raw))
        await raw.send(CloseConnection(code=4000))
        await done.wait()

    await _run(on_open, client)
    assert outcome == [b"y", 4000]
    assert [(e.code, e.reason) for e in events if isinstance(e, CloseConnection)] == [
        (4000, "done")
    ]


async def test_an_abandoned_partial_write_closes_without_a_close_frame() -> None:
    outcome: Outcome = []

    async def on_open(ws: WebSocket) -> None:
        rest = ws.write_nowait(b"a" * BIG)
        assert isinstance(rest, memoryview)
        ws.abandon()  # the writer is gone: the rest will never be sent
        ws.abandon()  # idempotent
        outcome.append(ws.closed)
        with trio.fail_after(5):
            await ws.aclose(1000)  # the lock is free again; no frame may follow

    received = bytearray()

    async def client(port: int) -> None:
        raw = await RawClient.open(port, rcvbuf=4096)
        with trio.fail_after(5):
            while chunk := await raw.stream.receive_some(1 << 20):
                received.extend(chunk)

    await _run(on_open, client)
    assert outcome == [True]
    assert len(received) < BIG  # the torn frame, and nothing after it


async def test_tls_round_trip_goes_through_the_awaited_path(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    outcome: Outcome = []

    async def on_open(ws: WebSocket) -> None:
        message = await ws.receive()
        assert isinstance(message, bytes)
        outcome.append(ws.write_nowait(message))  # no socket to write to: queued
        await ws.write(message)
        await _drain(ws)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, on_open, tls=server_ctx)
            async with open_websocket("127.0.0.1", port, "/", use_ssl=client_ctx) as client:
                await client.send_message(b"secret")
                assert await client.get_message() == b"secret"
            nursery.cancel_scope.cancel()
    assert outcome == [b"secret"]


async def test_a_close_to_a_peer_that_reads_nothing_keeps_to_the_callers_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found in review: the close frame is sent shielded (half a frame must never be left
    on the wire), and the shield held the gateway's 2 s close for CONTROL_TIMEOUT (5 s).
    Here the socket's buffers are full, so the close frame cannot go out: ``aclose`` under
    a shielded 0.5 s deadline (as the gateway's ``_close``) gives up then and aborts."""
    server_side, peer = socket.socketpair()
    with server_side, peer:
        for sock in (server_side, peer):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server_side.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:  # fill both buffers without touching the WebSocket's state
                server_side.send(bytes(4096))
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_side))
        ws = WebSocket(stream, Protocol(ConnectionType.SERVER), max_message_size=MAX_MESSAGE)
        started = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            await ws.aclose(1001, "going away")
        assert trio.current_time() - started == pytest.approx(0.5)  # not CONTROL_TIMEOUT
        assert ws.closed


@pytest.mark.parametrize("handed_over", [False, True], ids=["waiting", "handed-over"])
@pytest.mark.parametrize("sent", ["close", "ping-close", "too-big", "unmasked"])
async def test_a_peers_close_is_answered_when_a_wake_up_lands_in_the_wait_for_the_write_lock(
    handed_over: bool, sent: str
) -> None:
    """Found in review: the peer's close read while a writer held the write lock, and the
    wake-up (drain, ``close_soon``: ``conn.reading`` covers all of ``receive``) cancelled
    the reader in its wait for the lock, or as the lock was handed to it: no close frame
    ever went out (``aclose`` saw the connection closed) and the peer saw 1006. Now the
    close stays due and ``aclose``, as the gateway's ``_close``, sends it. The same for our
    own verdict on the peer (a second review): a message too big (1009), a frame that breaks
    the protocol (1002, RFC 6455 §5.1: a client's frames are masked)."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    ws = WebSocket(server_stream, Protocol(ConnectionType.SERVER), max_message_size=MAX_MESSAGE)
    conn = Connection(ws=ws, queue_frames=8)
    peer = Protocol(ConnectionType.CLIENT)
    lock = ws._write_lock()
    lock.acquire_nowait()  # a writer's frame going out
    woken: Outcome = []

    async def gateway_reader() -> None:  # ``Gateway.serve_connection``'s read, as written
        with trio.CancelScope() as scope:
            conn.bind(scope, None)
            conn.reading = True
            try:
                await ws.receive()
            finally:
                conn.reading = False
        woken.append(scope.cancelled_caught)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gateway_reader)
            close = CloseConnection(code=4321, reason="bye")
            if sent == "unmasked":
                wire = b"\x82\x01x"  # FIN, binary, 1 byte, no mask
            elif sent == "too-big":
                wire = peer.send(BytesMessage(data=bytes(MAX_MESSAGE + 1)))
            else:
                frames = [Ping(payload=b"p"), close] if sent == "ping-close" else [close]
                wire = b"".join(peer.send(e) for e in frames)
            await client_stream.send_all(wire)
            await trio.testing.wait_all_tasks_blocked()
            assert lock.statistics().tasks_waiting == 1  # the reader, to answer
            if handed_over:
                lock.release()  # the reader holds it now, but has not run yet
                conn.wake_reader()
            else:
                conn.wake_reader()
                lock.release()
        assert woken == [True]  # the wake-up ended the read
        await ws.aclose(1001, "server shutting down")  # the gateway's ``_close``
        received = b""
        while chunk := await client_stream.receive_some():
            received += chunk
    peer.receive_data(received)
    events = list(peer.events())
    expected = {"close": 4321, "ping-close": 4321, "too-big": 1009, "unmasked": 1002}[sent]
    assert [type(e) for e in events] == [CloseConnection], events
    assert events[0].code == expected
    if sent.endswith("close"):
        assert events == [close]
    assert ws.close_code == expected
