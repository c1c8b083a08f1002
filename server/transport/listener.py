"""Accept connections and start one task for each, isolated from the others.

``serve`` opens the TCP listeners (wrapped in TLS when given a context: the TLS handshake
then happens on the connection's first read, inside the gateway's upgrade deadline) and
runs an accept loop per listener, starting the handler for each accepted stream in the
*handler nursery* the caller owns, so that the caller decides when connections still in
their upgrade are dropped (``server.app``). The handler is the whole connection: one
coroutine for its life (an idle connection holds that one frame, nothing wrapped around
it), which must let no ``Exception`` escape, or the handler nursery, every connection and
the server would go with it: it ends with ``except* Exception`` and ``connection_failed``.
Cancellation and other ``BaseException`` still propagate, so shutdown is unchanged.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from server.metrics import METRICS

__all__ = ["TASK_NAME", "connection_failed", "serve"]

log = logging.getLogger(__name__)

#: Every connection task's name: one string, because trio formats a name that is not a
#: string anew for every task (~100 B held for each connection's life).
TASK_NAME: Final = "rivet.connection"

#: accept() errors that mean "out of resources, try again soon", as in trio's
#: ``serve_listeners``; any other error propagates.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_SLEEP: Final = 0.1

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


async def serve(
    handler: Handler,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (0: any free port) and run ``handler(stream)`` in
    ``handler_nursery`` for every connection until cancelled. ``task_status.started``
    gets the bound port."""
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    sockets = await trio.open_tcp_listeners(port, host=host)
    bound = sockets[0].socket.getsockname()[1]
    for socket_listener in sockets:
        listener: trio.abc.Listener[trio.abc.Stream] = socket_listener
        if tls is not None:
            # https_compatible: no TLS close_notify exchange on close, as browsers expect.
            listener = trio.SSLListener(socket_listener, tls, https_compatible=True)
        listeners.append(listener)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, listener, handler, handler_nursery)
            task_status.started(bound)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream], handler: Handler, handlers: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            log.error("accept failed; retrying shortly", extra={"errno": exc.errno})
            await trio.sleep(_CAPACITY_SLEEP)
        else:
            handlers.start_soon(handler, stream, name=TASK_NAME)


def connection_failed(group: BaseExceptionGroup[Exception]) -> None:
    """Count and log a connection task's failure (without the peer's data: only the kinds
    of the exceptions); that connection ends, nothing else does."""
    METRICS.connection_failures.inc()
    kinds = sorted({type(e).__name__ for e in group.exceptions})
    log.warning("a connection task failed; that connection ends", extra={"errors": kinds})
