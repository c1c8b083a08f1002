"""One connection's failure never takes the server down.

trio's ``serve_listeners`` starts a task per accepted connection in a *handler nursery*; an
exception escaping one of them would cancel the nursery, and with it every connection and
the server. Our own handler (``Gateway.handle``) lets nothing escape, but the WebSocket
library runs code of its own in the same task, in corners a hostile peer can reach: for
example trio-websocket 0.12 answers a ping that arrives while the connection is closing
and wsproto raises ``LocalProtocolError`` from that task, found by the hostile-run test.

``IsolatedNursery`` is the "any object with a ``start_soon`` method" that
``serve_listeners`` accepts as handler nursery: it runs each connection task so that an
``Exception`` escaping it is logged (without the peer's data) and counted, and ends only
that connection. Cancellation and other ``BaseException`` still propagate, so shutdown
is unchanged.

trio-websocket's connection task (``WebSocketServer._handle_connection``) is run as
``_isolated_connection``: the same steps with the isolation around them in one coroutine,
instead of a wrapper coroutine awaiting trio's ``_run_handler`` awaiting trio-websocket's
method: each is held for the connection's whole life (the wrapper also with the frame
object trio makes for a task's coroutine: ~0.45 KiB more per idle connection than one
coroutine). The copies of those two functions (trio 0.35, trio-websocket 0.12.2) and the
attributes they read are pinned by ``tests/server/test_isolation.py``: if either library
changes them, the test fails. Any other task is wrapped by ``_isolated``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio._highlevel_serve_listeners as _serve_listeners
from trio_websocket import WebSocketConnection, WebSocketServer
from wsproto import ConnectionType, WSConnection

from server.metrics import METRICS

log = logging.getLogger(__name__)


class IsolatedNursery:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: Any, name: object = None
    ) -> None:
        if fn is _RUN_HANDLER and _RUN_HANDLER is not None and len(args) == 2:
            # serve_listeners' task for one accepted stream: (stream, handler).
            stream, handler = args
            server = getattr(handler, "__self__", None)
            if (
                isinstance(server, WebSocketServer)
                and getattr(handler, "__func__", None) is _HANDLE_CONNECTION
            ):
                self._nursery.start_soon(_isolated_connection, server, stream, name=_CONNECTION)
                return
        self._nursery.start_soon(_isolated, fn, args, name=_task_name(name or fn))


#: Task names by function: trio formats a name that is not a string anew for every task
#: (~100 B held for each connection's life), so the same string is given each time.
_names: dict[object, str] = {}


def _task_name(name: object) -> object:
    if isinstance(name, str):
        return name
    key = getattr(name, "__func__", name)  # a bound method is a new object every time
    text = _names.get(key)
    if text is None:
        try:
            text = f"{name.__module__}.{name.__qualname__}"  # type: ignore[attr-defined]
        except AttributeError:
            return name
        if len(_names) < 64:
            _names[key] = text
    return text


#: What ``serve_listeners`` starts per accepted stream, and trio-websocket's handler in it.
_RUN_HANDLER = getattr(_serve_listeners, "_run_handler", None)  # None: always ``_isolated``
_HANDLE_CONNECTION = WebSocketServer._handle_connection
#: The tasks' names (a string: see ``_task_name``).
_CONNECTION = f"{__name__}._isolated_connection"
_READER = "trio_websocket._impl.WebSocketConnection._reader_task"


async def _isolated(fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except* Exception as group:
        _failed(group)


async def _isolated_connection(server: WebSocketServer, stream: trio.abc.Stream) -> None:
    """``_isolated(_run_handler, (stream, server._handle_connection))`` in one coroutine:
    trio's ``_run_handler`` (close the stream at the end, whatever happens) around
    trio-websocket 0.12.2's ``_handle_connection`` (the per-connection nursery holds its
    reader task; the handler runs once the HTTP upgrade request has come in within the
    connect timeout), step for step, isolated like ``_isolated``."""
    try:
        try:
            async with trio.open_nursery() as nursery:
                connection = WebSocketConnection(
                    stream,
                    WSConnection(ConnectionType.SERVER),
                    message_queue_size=server._message_queue_size,
                    max_message_size=server._max_message_size,
                    receive_buffer_size=server._receive_buffer_size,
                )
                nursery.start_soon(connection._reader_task, name=_READER)
                with trio.move_on_after(server._connect_timeout) as connect_scope:
                    request = await connection._get_request()
                if connect_scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    await stream.aclose()
                    return
                try:
                    await server._handler(request)
                finally:
                    with trio.move_on_after(server._disconnect_timeout):
                        # aclose() shuts the reader task down even if it is cancelled.
                        await connection.aclose()
        finally:
            await trio.aclose_forcefully(stream)
    except* Exception as group:
        _failed(group)


def _failed(group: BaseExceptionGroup[Exception]) -> None:
    METRICS.connection_failures.inc()
    kinds = sorted({type(e).__name__ for e in group.exceptions})
    log.warning("a connection task failed; that connection ends", extra={"errors": kinds})
