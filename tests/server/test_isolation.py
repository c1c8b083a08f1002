"""``server.isolation``: a connection task's failure ends only that connection, and
serve_listeners' task for a WebSocket connection runs as one coroutine
(``_isolated_connection``), a copy of trio's ``_run_handler`` around trio-websocket's
``_handle_connection``: pinned here, so that a change to either fails this test."""

from __future__ import annotations

import contextlib
import inspect
import textwrap

import pytest
import trio
import trio._highlevel_serve_listeners as serve_listeners
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    serve_websocket,
)

from server import isolation
from server.isolation import IsolatedNursery
from server.metrics import METRICS

_RUN_HANDLER = """
async def _run_handler(stream: StreamT, handler: Handler[StreamT]) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
"""

_HANDLE_CONNECTION = """
async def _handle_connection(self, stream: trio.abc.Stream) -> None:
    '''
    Handle an incoming connection by spawning a connection background task
    and a handler task inside a new nursery.

    :param stream:
    :type stream: trio.abc.Stream
    '''
    async with trio.open_nursery() as nursery:
        connection = WebSocketConnection(stream,
            WSConnection(ConnectionType.SERVER),
            message_queue_size=self._message_queue_size,
            max_message_size=self._max_message_size,
            receive_buffer_size=self._receive_buffer_size)
        nursery.start_soon(connection._reader_task)
        with trio.move_on_after(self._connect_timeout) as connect_scope:
            request = await connection._get_request()
        if connect_scope.cancelled_caught:
            nursery.cancel_scope.cancel()
            await stream.aclose()
            return
        try:
            await self._handler(request)
        finally:
            with trio.move_on_after(self._disconnect_timeout):
                # aclose() will shut down the reader task even if it's
                # cancelled:
                await connection.aclose()
"""


def _source(fn: object) -> str:
    return textwrap.dedent(inspect.getsource(fn)).strip()  # type: ignore[arg-type]


def test_the_functions_copied_are_unchanged() -> None:
    # If one fails: trio or trio-websocket changed what isolation._isolated_connection
    # copies. Bring the copy in line with the new code, then update the text here.
    assert _source(serve_listeners._run_handler) == _RUN_HANDLER.strip()
    assert _source(WebSocketServer._handle_connection) == _HANDLE_CONNECTION.strip()
    assert isolation._RUN_HANDLER is serve_listeners._run_handler


# The client of the failing connection leaves a socket to the garbage collector (the same
# with trio's and trio-websocket's own functions in place of ``_isolated_connection``).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_websocket_connection_runs_as_one_isolated_coroutine() -> None:
    stacks: list[list[str]] = []
    failures = METRICS.connection_failures.value

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        task = trio.lowlevel.current_task()
        stacks.append([type(task.coro).__name__, task.coro.cr_code.co_name, task.name])
        if ws.path == "/fail":
            await ws.aclose()
            raise RuntimeError("boom")  # ends this connection only
        message = await ws.get_message()
        await ws.send_message(message)

    async with trio.open_nursery() as handlers, trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler,
                "127.0.0.1",
                0,
                None,
                handler_nursery=IsolatedNursery(handlers),  # type: ignore[arg-type]
                task_status=task_status,
            )
        )
        async with open_websocket("127.0.0.1", server.port, "/fail", use_ssl=False) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.get_message()
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
            await ws.send_message(b"still serving")
            assert await ws.get_message() == b"still serving"
        nursery.cancel_scope.cancel()
        handlers.cancel_scope.cancel()

    assert METRICS.connection_failures.value == failures + 1
    assert stacks == [
        ["coroutine", "_isolated_connection", isolation._CONNECTION],
        ["coroutine", "_isolated_connection", isolation._CONNECTION],
    ]


async def test_any_other_task_is_wrapped() -> None:
    failures = METRICS.connection_failures.value
    ran = []

    async def fails(tag: str) -> None:
        ran.append(tag)
        raise ValueError(tag)

    async with trio.open_nursery() as nursery:
        IsolatedNursery(nursery).start_soon(fails, "a")
        IsolatedNursery(nursery).start_soon(fails, "b")
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(ran) == ["a", "b"]
    assert METRICS.connection_failures.value == failures + 2
