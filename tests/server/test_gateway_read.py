"""The gateway's read of the next frame without a cancel scope when one is already queued
(``server.gateway._message_waiting``): the trio-websocket internal it relies on, and that it
tells a queued message from none, against a real client on loopback."""

from __future__ import annotations

import contextlib
import inspect

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

from server.gateway import _message_waiting


def test_the_internal_relied_on_is_there() -> None:
    # get_message takes from _recv_channel, a trio memory channel, and nothing else.
    source = inspect.getsource(trio_websocket._impl.WebSocketConnection.get_message)
    assert "await self._recv_channel.receive()" in source
    init = inspect.getsource(trio_websocket._impl.WebSocketConnection.__init__)
    assert "self._send_channel, self._recv_channel = trio.open_memory_channel" in init


async def test_a_queued_message_is_seen_and_taken_in_order() -> None:
    seen: list[tuple[bool, bytes]] = []
    done = trio.Event()
    sent = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        assert isinstance(ws._recv_channel, trio.MemoryReceiveChannel)
        assert not _message_waiting(ws)
        # Without reading: once the client has sent and every task here is blocked, the
        # reader task has queued the first message.
        await sent.wait()
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):
            waiting = _message_waiting(ws)
            message = await ws.get_message()
            assert isinstance(message, bytes)
            seen.append((waiting, message))
        done.set()
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as client:
            for payload in (b"one", b"two", b"three"):
                await client.send_message(payload)
            sent.set()
            await done.wait()
        nursery.cancel_scope.cancel()

    assert [message for _, message in seen] == [b"one", b"two", b"three"]
    assert seen[0][0]  # the first was queued when looked at
