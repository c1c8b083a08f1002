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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from server.metrics import METRICS

log = logging.getLogger(__name__)


class IsolatedNursery:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: Any, name: object = None
    ) -> None:
        self._nursery.start_soon(_isolated, fn, args, name=name or fn)


async def _isolated(fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except* Exception as group:
        METRICS.connection_failures.inc()
        kinds = sorted({type(e).__name__ for e in group.exceptions})
        log.warning("a connection task failed; that connection ends", extra={"errors": kinds})
