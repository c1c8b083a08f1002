"""The gateway on the transport, over a real socket (``Gateway.serve_connection``): the
reader woken without a cancel scope per read, drain never cancelling a request in flight,
and one connection's failure ending that connection only. The router is replaced by a stub
(frames are plain bytes here), so these tests are about the connection's life alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket

from protocol.errors import CloseCode
from server.app import RunningServer, serve
from server.config import Config
from server.connection import Connection
from server.gateway import Gateway
from server.metrics import METRICS
from server.notify.memory import MemoryNotifier
from server.transport.listener import TASK_NAME

pytestmark = pytest.mark.filterwarnings(
    # trio-websocket's client leaves its socket to the garbage collector when the server
    # closes first (the SDK's opener closes it; it is not used here to test the server alone).
    "ignore::pytest.PytestUnraisableExceptionWarning"
)

Stub = Callable[[Connection, bytes], Awaitable[None]]


@pytest.fixture
async def running(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    config = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", store="memory")
    server: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    # The user ``_authenticate`` binds connections to: the gateway reads it again once a
    # connection is attached (a session revoked meanwhile is closed).
    user = await server.ctx.stores.personal.create_user(phone="+1555", display_name="", now=0)
    assert user.user_id == 1
    yield server
    server.shutdown()


def _stub(running: RunningServer, handle: Stub) -> None:
    running.router.handle_frame = handle  # type: ignore[method-assign]


async def _authenticate(conn: Connection, frame: bytes) -> bool:
    if frame == b"auth":
        conn.user_id, conn.device_id, conn.token_generation = 1, 1, 0
        conn.reply_nowait(b"authed")
        return True
    return False


async def _close_code(ws: WebSocketConnection) -> tuple[list[bytes | str], int | None]:
    """Messages until the server closes, and its close code."""
    got: list[bytes | str] = []
    try:
        while True:
            got.append(await ws.get_message())
    except ConnectionClosed as closed:
        return got, closed.reason.code if closed.reason else None


def _only_connection(running: RunningServer) -> Connection:
    (conn,) = running.gateway._connections
    return conn


@pytest.mark.parametrize("authenticated", [True, False])
async def test_an_idle_reader_is_woken_and_closes_after_what_was_queued(
    running: RunningServer, authenticated: bool
) -> None:
    async def handle(conn: Connection, frame: bytes) -> None:
        await _authenticate(conn, frame)

    _stub(running, handle)
    with trio.fail_after(5):
        async with open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as ws:
            if authenticated:
                await ws.send_message(b"auth")
                assert await ws.get_message() == b"authed"
            await trio.testing.wait_all_tasks_blocked()
            conn = _only_connection(running)
            assert conn.authenticated is authenticated
            assert conn.reading  # idle, waiting in ws.receive()
            # What a moderator's kick does: a notice, then close with flush.
            conn.send_nowait(b"notice")
            conn.close_soon(4100, "kicked")
            assert await _close_code(ws) == ([b"notice"], 4100)
        await trio.testing.wait_all_tasks_blocked()
        assert not running.gateway._connections


async def test_drain_lets_a_request_in_flight_finish_and_its_reply_go_out(
    running: RunningServer,
) -> None:
    started = trio.Event()

    async def handle(conn: Connection, frame: bytes) -> None:
        if await _authenticate(conn, frame):
            return
        started.set()
        await trio.sleep(0.3)  # a slow request: drain comes in the middle of it
        conn.reply_nowait(b"reply to " + frame)

    _stub(running, handle)
    with trio.fail_after(5):
        async with open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as ws:
            await ws.send_message(b"auth")
            assert await ws.get_message() == b"authed"
            await ws.send_message(b"slow")
            await started.wait()
            running.shutdown()  # stop listening, drain
            got, code = await _close_code(ws)
    assert got == [b"reply to slow"]
    assert code == CloseCode.GOING_AWAY


async def test_drain_wakes_idle_connections_at_once(running: RunningServer) -> None:
    async def handle(conn: Connection, frame: bytes) -> None:
        await _authenticate(conn, frame)

    _stub(running, handle)
    with trio.fail_after(5):
        async with (
            open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as idle,
            open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as authed,
        ):
            await authed.send_message(b"auth")
            assert await authed.get_message() == b"authed"
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
            running.shutdown()
            assert await _close_code(idle) == ([], CloseCode.GOING_AWAY)
            assert await _close_code(authed) == ([], CloseCode.GOING_AWAY)
            # Well within the shutdown grace: woken, not timed out.
            assert trio.current_time() - started < 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_failing_connection_ends_alone_as_one_coroutine(running: RunningServer) -> None:
    tasks: list[tuple[str, str]] = []
    failures = METRICS.connection_failures.value

    async def handle(conn: Connection, frame: bytes) -> None:
        task = trio.lowlevel.current_task()
        tasks.append((task.name, task.coro.cr_code.co_name))
        if frame == b"boom":
            raise RuntimeError("boom")  # escapes the gateway's connection task
        conn.reply_nowait(frame)

    _stub(running, handle)
    with trio.fail_after(5):
        async with open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as other:
            async with open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as ws:
                await ws.send_message(b"boom")
                got, _ = await _close_code(ws)
                assert got == []
            await other.send_message(b"still serving")
            assert await other.get_message() == b"still serving"
        async with open_websocket("127.0.0.1", running.port, "/", use_ssl=False) as again:
            await again.send_message(b"new ones too")
            assert await again.get_message() == b"new ones too"
    assert METRICS.connection_failures.value == failures + 1
    # Each connection is one task running one coroutine, with the same name string.
    assert set(tasks) == {(TASK_NAME, "serve_connection")}


class _Stuck:
    """Stands in for the WebSocket: sends never finish, ``receive`` waits for ever."""

    async def send_message(self, message: bytes) -> None:
        await trio.sleep_forever()

    async def receive(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError


async def _read(draining: bool, conn: Connection) -> str | bytes | None:
    """``Gateway._read_frame`` with only what it uses of the gateway."""
    return await Gateway._read_frame(SimpleNamespace(_draining=draining), conn)  # type: ignore[arg-type]


async def test_a_wake_up_ends_the_wait_for_room_in_the_send_queue(autojump_clock: object) -> None:
    conn = Connection(ws=_Stuck(), queue_frames=8, queue_bytes=10)  # type: ignore[arg-type]
    result: list[str | bytes | None] = []
    draining = [False]

    async def read() -> None:
        with trio.CancelScope() as scope:
            conn.bind(scope, nursery)
            result.append(await _read(draining[0], conn))

    async with trio.open_nursery() as nursery:
        conn.reply_nowait(b"r" * 100)  # over the bound, and nothing drains it
        nursery.start_soon(read)
        await trio.sleep(60)
        assert result == []  # backpressure: no next request while over the bound
        conn.close_soon(4000, "test")  # what drain does too: the flag, then the wake-up
        await trio.sleep(0.1)
        conn.stop_writer()
    assert result == [None]


async def test_a_wake_up_cancels_only_a_reader_waiting_for_bytes() -> None:
    conn = Connection(ws=_Stuck(), queue_frames=8)  # type: ignore[arg-type]
    scope = trio.CancelScope()  # the reader's (not entered here)
    conn.bind(scope, None)
    conn.wake_reader()  # handling a request (not reading): nothing is cancelled
    assert not scope.cancel_called
    conn.reading = True
    conn.wake_reader()
    assert scope.cancel_called and conn.reader_cancelled
