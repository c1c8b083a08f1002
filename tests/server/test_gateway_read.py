"""The gateway's wait for the next frame without a cancel scope (``server.gateway``: the read
loop in ``Gateway.handle`` and ``Gateway._read_frame``; ``Connection.wake_reader``): the
trio-websocket internals it relies on, and against a real client on loopback that frames
come in order, that a wake-up ends the wait without being taken for a frame, and that a
wake-up when the wait is not blocked (a message queued, or the connection closed) is
harmless."""

from __future__ import annotations

import contextlib
import inspect
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing
import trio_websocket
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

from server.connection import Connection
from server.gateway import Gateway


def test_the_internals_relied_on_are_there() -> None:
    impl = trio_websocket._impl.WebSocketConnection
    # get_message takes from _recv_channel, a trio memory channel, and nothing else; it
    # turns only its end (EndOfChannel, ClosedResourceError) into ConnectionClosed.
    source = inspect.getsource(impl.get_message)
    assert "await self._recv_channel.receive()" in source
    assert "except (trio.ClosedResourceError, trio.EndOfChannel):" in source
    init = inspect.getsource(impl.__init__)
    assert "self._send_channel, self._recv_channel = trio.open_memory_channel" in init
    # Its reader task only sends into _send_channel (so a wake-up put there is taken by
    # whoever receives next: the gateway), and tolerates a channel closed under it.
    handler = inspect.getsource(impl._handle_message_event)
    assert "await self._send_channel.send(msg)" in handler
    assert "except (trio.ClosedResourceError, trio.BrokenResourceError):" in handler


def _reader(draining: bool = False) -> Any:
    """What ``Gateway._read_frame`` uses of the gateway."""
    return SimpleNamespace(_draining=draining)


async def _read(gateway: Any, conn: Connection) -> str | bytes | None:
    return await Gateway._read_frame(gateway, conn)


async def test_frames_in_order_then_a_wake_up_ends_the_wait() -> None:
    seen: list[str | bytes | None] = []
    stopped = trio.Event()
    sent = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        assert isinstance(ws._recv_channel, trio.MemoryReceiveChannel)
        assert isinstance(ws._send_channel, trio.MemorySendChannel)
        conn = Connection(ws=ws, queue_frames=8)
        gateway = _reader()
        await sent.wait()
        for _ in range(3):
            seen.append(await _read(gateway, conn))

        async def wake_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            gateway._draining = True  # what the gateway's drain sets before waking
            conn.wake_reader()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wake_soon)
            with trio.fail_after(5):
                seen.append(await _read(gateway, conn))  # blocked until woken
        stopped.set()
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as client:
            for payload in (b"one", b"two", b"three"):
                await client.send_message(payload)
            sent.set()
            await stopped.wait()
        nursery.cancel_scope.cancel()

    assert seen == [b"one", b"two", b"three", None]


async def test_a_wake_up_is_skipped_when_reading_goes_on_and_harmless_when_not_waiting() -> None:
    seen: list[str | bytes | None] = []
    done = trio.Event()
    first = trio.Event()
    second = trio.Event()
    closed = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        conn = Connection(ws=ws, queue_frames=8)
        gateway = _reader()
        # A stale wake-up (nothing to stop for) is passed over: the next frame is read.
        conn.wake_reader()
        seen.append(await _read(gateway, conn))
        first.set()
        # A message queued and a wake-up while nobody waits: the channel is full, the
        # wake-up is dropped, and the close request stops the next read before it waits.
        await trio.testing.wait_all_tasks_blocked()
        await second.wait()
        await trio.testing.wait_all_tasks_blocked()
        conn.close_soon(4000, "test")
        seen.append(await _read(gateway, conn))
        done.set()
        # Once the peer has gone the channel is closed: a wake-up then is no error.
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.get_message()
        conn.wake_reader()
        closed.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as client:
            await client.send_message(b"one")
            await first.wait()
            await client.send_message(b"two")
            second.set()
            await done.wait()
        with trio.fail_after(5):
            await closed.wait()
        nursery.cancel_scope.cancel()

    assert seen == [b"one", None]


async def test_a_wake_up_ends_the_wait_for_room_in_the_send_queue(
    autojump_clock: object,
) -> None:
    class _Stuck:
        async def send_message(self, message: bytes) -> None:
            await trio.sleep_forever()

    conn = Connection(ws=_Stuck(), queue_frames=8, queue_bytes=10)  # type: ignore[arg-type]
    conn.reply_nowait(b"r" * 100)  # over the bound, and nothing drains it
    gateway = _reader()
    result: list[str | bytes | None] = []

    async def read() -> None:
        result.append(await _read(gateway, conn))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.sleep(60)
        assert result == []  # backpressure: no next request while over the bound
        gateway._draining = True
        conn.wake_reader()
        await trio.sleep(0.1)
    assert result == [None]
