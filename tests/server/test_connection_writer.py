"""A connection's writer task runs only while frames wait (``Connection._write_queued``)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionType

from protocol.errors import CloseCode
from server.connection import Connection
from server.transport import ConnectionClosed, WebSocket


class _Socket:
    """Stands in for the WebSocket (no socket: every frame goes through the queue)."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.sent: list[bytes] = []

    async def send_message(self, frame: bytes) -> None:
        await self.open.wait()
        self.sent.append(frame)


def _conn(socket: _Socket) -> Connection:
    return Connection(ws=socket, queue_frames=16)  # type: ignore[arg-type]


async def test_an_idle_connection_has_no_writer_task_nor_queue() -> None:
    conn = _conn(_Socket())
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()  # the reader's (not entered here)
        conn.bind(scope, nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert nursery.child_tasks == frozenset()
    assert conn._send is None and conn._sizes is None and conn._room is None


async def test_a_writer_starts_for_waiting_frames_sends_them_in_order_and_ends() -> None:
    socket = _Socket()
    conn = _conn(socket)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()  # the reader's (not entered here)
        conn.bind(scope, nursery)
        conn.reply_nowait(b"a")
        conn.send_nowait(b"b")
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 1  # one writer for both
        socket.open.set()
        await conn.wait_sent()
        await trio.testing.wait_all_tasks_blocked()
        assert nursery.child_tasks == frozenset()  # nothing waits: the writer is gone
        conn.reply_nowait(b"c")
        await conn.wait_sent()
    assert socket.sent == [b"a", b"b", b"c"]
    assert conn.statistics() == {"queued": 0, "queued_bytes": 0, "event_bytes": 0, "sent": 3}


async def test_closing_without_flush_cancels_the_writer_and_queues_nothing_more() -> None:
    socket = _Socket()
    conn = _conn(socket)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()  # the reader's (not entered here)
        conn.bind(scope, nursery)
        conn.reply_nowait(b"a")
        await trio.testing.wait_all_tasks_blocked()
        conn.close_soon(CloseCode.SLOW_CONSUMER, "send queue full", flush=False)
        await conn.wait_sent()
        conn.send_nowait(b"late")
        await trio.testing.wait_all_tasks_blocked()
        assert nursery.child_tasks == frozenset()
    assert scope.cancel_called
    assert socket.sent == []


async def test_finish_sending_lets_the_writer_drain_then_refuses_frames() -> None:
    socket = _Socket()
    conn = _conn(socket)
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()  # the reader's (not entered here)
        conn.bind(scope, nursery)
        conn.reply_nowait(b"a")
        conn.finish_sending()
        conn.reply_nowait(b"refused")
        socket.open.set()
        await conn.wait_sent()
    assert socket.sent == [b"a"]


class _DeadSocket:
    """A peer that reset the connection: every write fails."""

    async def send_message(self, frame: bytes) -> None:
        await trio.lowlevel.checkpoint()
        raise ConnectionClosed(1006, "reset")


async def test_a_reader_waiting_for_room_goes_on_when_the_socket_dies() -> None:
    # Replies over the byte bound hold the reader in wait_send_room. When the socket dies,
    # what is still queued can never be sent: counted, it kept the queue over its bound for
    # good, and the connection open (online, holding a place of the user's connection
    # limit) until shutdown.
    conn = Connection(ws=_DeadSocket(), queue_frames=16, queue_bytes=10)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        conn.bind(trio.CancelScope(), nursery)
        conn.reply_nowait(b"x" * 8)
        conn.reply_nowait(b"y" * 700)
        assert conn.queued_bytes > conn.queue_bytes
        with trio.fail_after(5):
            await conn.wait_send_room()  # returns: the writer found the socket dead
            await conn.wait_sent()
    assert conn.queued_bytes == conn.event_bytes == 0
    assert conn.frames_sent == 0


async def test_after_a_slow_consumer_is_torn_down_no_later_frame_reaches_the_socket() -> None:
    """Found in review: the abort dropped the queued events and zeroed the byte counts, so a
    later event passed the bound, found the queue empty and went straight to the socket
    once the peer read a little: the client saw events after a hole."""
    server_side, peer = socket.socketpair()
    with server_side, peer:
        for sock in (server_side, peer):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_side))
        ws = WebSocket(stream, Protocol(ConnectionType.SERVER), max_message_size=1 << 20)
        conn = Connection(ws=ws, queue_frames=1024, queue_bytes=64 * 1024)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                conn.bind(scope, nursery)
                sent = 0
                while conn.close_request is None:  # the peer reads nothing
                    conn.send_nowait(b"x" * 1000)
                    sent += 1
                    if sent % 10 == 0:
                        await trio.lowlevel.checkpoint()
            assert conn.close_request.code == CloseCode.SLOW_CONSUMER
            await trio.testing.wait_all_tasks_blocked()  # the writer task has ended
            peer.setblocking(False)
            drained = 0
            while True:  # the peer reads what reached it, making room in the socket
                try:
                    drained += len(peer.recv(65536))
                except BlockingIOError:
                    break
            assert drained > 0
            before = conn.frames_sent
            conn.send_nowait(b"after the abort")
            assert conn.frames_sent == before
            with pytest.raises(BlockingIOError):
                peer.recv(65536)  # nothing more was written
            nursery.cancel_scope.cancel()
