"""server.fastwrite: pre-built frames written straight to the socket, against wsproto's
framing and a real trio-websocket client; and the trio-websocket internals it relies on,
so that an upgrade that changes them fails here rather than corrupting streams."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio_websocket
import wsproto
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import FrameProtocol

from client.transport import open_websocket as open_client_websocket
from server import fastwrite
from server.fastwrite import FrameWriter, frame

BIG = 8 * 1024 * 1024  # far more than a loopback socket buffer: forces a partial write


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_match_wsproto(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data(payload))
    assert frame(payload) == expected
    assert frame(payload) is frame(payload)  # built once per payload object


def test_the_internals_relied_on_are_there() -> None:
    source = inspect.getsource(trio_websocket._impl.WebSocketConnection)
    assert "self._stream_lock = trio.StrictFIFOLock()" in source
    assert "async with self._stream_lock:" in source
    assert "self._close_reason" in source
    assert "async def _abort_web_socket(self)" in source
    # _send is the one writer, and it holds the lock around send_all.
    send = inspect.getsource(trio_websocket._impl.WebSocketConnection._send)
    assert "async with self._stream_lock:" in send and "self._stream.send_all" in send
    assert ConnectionState.OPEN is not None
    assert not hasattr(trio.StrictFIFOLock, "release_on_behalf_of")  # owner-bound: why we swap it


async def _serve(
    nursery: trio.Nursery, on_connect: Callable[[WebSocketConnection], Awaitable[None]]
) -> int:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await on_connect(ws)
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return int(server.port)


async def test_small_frames_go_out_whole_without_yielding_and_in_order() -> None:
    written: list[object] = []

    async def on_connect(ws: WebSocketConnection) -> None:
        writer = FrameWriter.for_ws(ws)
        assert writer is not None
        assert isinstance(ws._stream_lock, trio.Semaphore)  # swapped for a handoff lock
        for i in range(200):
            written.append(writer.write_nowait(i.to_bytes(4, "big")))
        await ws.send_message(b"done")  # trio-websocket's own path still works after ours

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as client:
            got = [await client.get_message() for _ in range(201)]
        nursery.cancel_scope.cancel()
    assert written == [None] * 200
    assert got == [i.to_bytes(4, "big") for i in range(200)] + [b"done"]


async def test_a_partial_write_holds_the_lock_until_the_rest_is_sent() -> None:
    big, after = b"a" * BIG, b"b" * 10

    async def on_connect(ws: WebSocketConnection) -> None:
        writer = FrameWriter.for_ws(ws)
        assert writer is not None
        rest = writer.write_nowait(big)
        assert isinstance(rest, memoryview) and 0 < len(rest) < BIG + 14
        # The lock is held for the rest: nothing else may start, not even trio-websocket.
        assert writer.write_nowait(after) is after
        async with trio.open_nursery() as writers:
            writers.start_soon(ws.send_message, b"tail")  # waits for the lock
            await trio.sleep(0.01)
            await writer.write(rest)
            await writer.write(after)

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, max_message_size=2 * BIG
        ) as client:
            got = [await client.get_message() for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert got == [big, b"tail", after]


async def test_nothing_is_written_while_trio_websocket_holds_the_lock_or_after_close() -> None:
    outcome: dict[str, object] = {}

    async def on_connect(ws: WebSocketConnection) -> None:
        writer = FrameWriter.for_ws(ws)
        assert writer is not None
        async with ws._stream_lock:
            outcome["busy"] = writer.write_nowait(b"x")
        await ws.aclose()
        outcome["closed"] = writer.write_nowait(b"y")
        with pytest.raises(ConnectionClosed):
            await writer.write(b"z")

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        # The SDK's opener: it closes the client's stream when the server closes first.
        async with open_client_websocket(f"ws://127.0.0.1:{port}/") as client:
            with pytest.raises(ConnectionClosed):
                await client.get_message()
        nursery.cancel_scope.cancel()
    assert outcome == {"busy": b"x", "closed": b"y"}


def test_stand_ins_and_tls_get_no_fast_path() -> None:
    assert FrameWriter.for_ws(object()) is None
    assert fastwrite.frame_header(5) == b"\x82\x05"


async def test_abandoning_a_partial_write_lets_the_close_go_out() -> None:
    async def on_connect(ws: WebSocketConnection) -> None:
        writer = FrameWriter.for_ws(ws)
        assert writer is not None
        rest = writer.write_nowait(b"a" * BIG)
        assert isinstance(rest, memoryview)
        assert writer.write_nowait(b"b") == b"b"  # held for the rest
        writer.abandon()  # the writer task is gone: the rest will never be sent
        writer.abandon()  # idempotent
        with trio.fail_after(5):
            async with ws._stream_lock:
                pass

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_client_websocket(f"ws://127.0.0.1:{port}/") as client:
            await trio.sleep(0.2)
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_release_handshake_drops_the_upgrade_state_and_the_connection_still_works() -> None:
    released: list[bool] = []

    async def on_connect(ws: WebSocketConnection) -> None:
        assert type(ws._wsproto.handshake).__name__ == "H11Handshake"
        released.append(fastwrite.release_handshake(ws))
        assert list(ws._wsproto.events()) == []
        await ws.send_message(b"after")

    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, on_connect)
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as client:
            assert await client.get_message() == b"after"
            await client.send_message(b"ping me")  # the server's reader still parses frames
            await client.ping()
        nursery.cancel_scope.cancel()
    assert released == [True]
    assert not fastwrite.release_handshake(object())


def test_release_handshake_relies_on_wsproto_draining_the_handshake_first() -> None:
    source = inspect.getsource(wsproto.WSConnection)
    assert "yield from self.handshake.events()" in source
    assert source.count("if self.connection is None:") == 3  # state, send, receive_data
