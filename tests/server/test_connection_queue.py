"""The send queue's policy without a network: events are held to the byte and frame bounds
(past them: close 4050), replies to the frame bound, with reading paused instead."""

from __future__ import annotations

import trio

from protocol.errors import CloseCode
from server.connection import Connection


class _Socket:
    """Stands in for the WebSocket: ``send_message`` waits until ``open`` is set."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.sent: list[bytes] = []

    async def send_message(self, frame: bytes) -> None:
        await self.open.wait()
        self.sent.append(frame)


def _conn(socket: _Socket, *, frames: int = 64, byte_bound: int = 100) -> Connection:
    return Connection(ws=socket, queue_frames=frames, queue_bytes=byte_bound)  # type: ignore[arg-type]


def test_events_past_the_byte_bound_close_the_connection_4050() -> None:
    conn = _conn(_Socket())
    conn.send_nowait(b"x" * 60)
    assert conn.close_request is None
    conn.send_nowait(b"x" * 60)
    assert conn.close_request is not None and conn.close_request.code == CloseCode.SLOW_CONSUMER
    assert conn.statistics()["event_bytes"] == 60  # the refused frame was not queued


def test_events_past_the_frame_bound_close_the_connection_4050() -> None:
    conn = _conn(_Socket(), frames=16, byte_bound=10_000)
    for _ in range(16):
        conn.send_nowait(b"e")
    assert conn.close_request is None
    conn.send_nowait(b"e")
    assert conn.close_request is not None and conn.close_request.code == CloseCode.SLOW_CONSUMER


def test_a_large_reply_is_queued_and_does_not_count_against_events() -> None:
    conn = _conn(_Socket())
    conn.reply_nowait(b"r" * 1_000)
    conn.send_nowait(b"e" * 90)
    assert conn.close_request is None
    stats = conn.statistics()
    assert (stats["queued_bytes"], stats["event_bytes"], stats["queued"]) == (1_090, 90, 2)


async def test_reading_pauses_while_replies_exceed_the_bound(autojump_clock: object) -> None:
    socket = _Socket()
    conn = _conn(socket)
    conn.reply_nowait(b"r" * 1_000)
    with trio.move_on_after(10) as waited:
        await conn.wait_send_room()
    assert waited.cancelled_caught  # nothing was written: the reader would still wait
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run_writer)
        socket.open.set()
        with trio.fail_after(1):
            await conn.wait_send_room()
        assert conn.statistics()["queued_bytes"] == 0
        conn.finish_sending()
    assert socket.sent == [b"r" * 1_000]
