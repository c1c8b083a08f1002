"""Opening a WebSocket to the server, with one fix over trio-websocket.

trio-websocket 0.12 leaves the client's TCP stream open when the *server* closes the
WebSocket first (its ``aclose`` returns early on an already-closed connection, and the
reader task only closes the stream on an abnormal close). The socket then lingers until
garbage collection and warns. We close the stream ourselves on exit. This reaches one
private attribute, ``WebSocketConnection._stream``; ``tests/client/test_transport.py``
fails if a trio-websocket upgrade removes it or fixes the leak.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import WebSocketConnection, open_websocket_url


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_size: int = 16 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """``ssl_context`` for ``wss://`` URLs (None: the system's trusted CAs)."""
    ws: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url, ssl_context=ssl_context, max_message_size=max_message_size
        ) as ws:
            yield ws
    finally:
        stream = getattr(ws, "_stream", None) if ws is not None else None
        if isinstance(stream, trio.abc.AsyncResource):
            with trio.CancelScope(shield=True):
                await stream.aclose()
