"""bench.baseline.fastwrite against wsproto's framing and a real trio-websocket client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from wsproto.frame_protocol import FrameProtocol

from bench.baseline.fastwrite import binary_frame, send_frame, text_frame

BIG = 8 * 1024 * 1024  # far more than a loopback socket buffer: forces the partial write


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_match_wsproto(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert binary_frame(payload) == bytes(
        FrameProtocol(client=False, extensions=[]).send_data(payload)
    )
    text = "é" * (size // 2)
    assert text_frame(text) == bytes(FrameProtocol(client=False, extensions=[]).send_data(text))


async def _serve(
    nursery: trio.Nursery, on_connect: Callable[[WebSocketConnection], Awaitable[None]]
) -> int:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await on_connect(ws)
        # Stay open until the client closes.
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return int(server.port)


async def test_small_frames_arrive_in_order() -> None:
    async def on_connect(ws: WebSocketConnection) -> None:
        for i in range(200):
            await send_frame(ws, binary_frame(i.to_bytes(4, "big")))
        await send_frame(ws, text_frame("done"))

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as client:
            got = [await client.get_message() for _ in range(201)]
        nursery.cancel_scope.cancel()
    assert got == [i.to_bytes(4, "big") for i in range(200)] + ["done"]


async def test_full_buffer_and_a_busy_lock_fall_back_without_interleaving() -> None:
    big_a, big_b = b"a" * BIG, b"b" * BIG

    async def on_connect(ws: WebSocketConnection) -> None:
        # Two writers at once: the first fills the socket buffer and holds the lock while
        # it awaits; the second must queue behind it, and send_message must too.
        async with trio.open_nursery() as writers:
            writers.start_soon(send_frame, ws, binary_frame(big_a))
            await trio.sleep(0.01)
            writers.start_soon(send_frame, ws, binary_frame(big_b))
            await trio.sleep(0.01)
            writers.start_soon(ws.send_message, b"tail")

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, max_message_size=2 * BIG
        ) as client:
            got = [await client.get_message() for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert got == [big_a, big_b, b"tail"]


async def test_closed_connection_raises_connection_closed() -> None:
    outcome: list[str] = []
    client_gone, done = trio.Event(), trio.Event()

    async def on_connect(ws: WebSocketConnection) -> None:
        await client_gone.wait()
        # The server's reader answered the client's close frame before the client returned.
        assert ws.closed is not None
        try:
            await send_frame(ws, binary_frame(b"too late"))
        except ConnectionClosed:
            outcome.append("closed")
        done.set()

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            pass
        client_gone.set()
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert outcome == ["closed"]
