"""Opening a WebSocket to the server, with one fix over trio-websocket.

trio-websocket 0.12 leaves the client's TCP stream open when the *server* closes the
WebSocket first (its ``aclose`` returns early on an already-closed connection, and the
reader task only closes the stream on an abnormal close). The socket then lingers until
garbage collection and warns. We close the stream ourselves on exit. This reaches one
private attribute, ``WebSocketConnection._stream``; ``tests/client/test_transport.py``
fails if a trio-websocket upgrade removes it or fixes the leak.

``connect_websocket``/``close_websocket`` are ``open_websocket`` in two halves, with
trio-websocket's reader task in a nursery of the caller's: ``RivetConnection`` runs its own
reader in the same nursery, so a connection costs one nursery instead of two (the SDK's
reconnect storms open thousands at once from one process). For a ``ws://`` URL whose host
is an IP address it also connects the socket itself: ``trio.open_tcp_stream`` resolves the
address and races connection attempts (happy eyeballs) in a nursery and task of its own,
for a single address that needs neither; that cost about a quarter of the client's CPU for
a connection.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import (
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
    wrap_client_stream,
)

#: trio-websocket's defaults for ``open_websocket_url``, kept by ``connect_websocket`` and
#: ``close_websocket``.
CONNECT_TIMEOUT = 60.0
DISCONNECT_TIMEOUT = 60.0
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
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
        if ws is not None:
            await _close_stream(ws)


async def connect_websocket(
    nursery: trio.Nursery,
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
) -> WebSocketConnection:
    """Connect, with trio-websocket's reader task in ``nursery``; errors and timeout as
    ``open_websocket`` (``HandshakeError`` for a network error, ``ConnectionTimeout``).
    Close with ``close_websocket``."""
    target = _direct_target(url) if ssl_context is None else None
    # A bare CancelScope, not ``trio.fail_after``: one generator less per connection.
    with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT) as scope:
        try:
            if target is None:
                return await connect_websocket_url(
                    nursery, url, ssl_context, max_message_size=max_message_size
                )
            family, host, port, host_header, resource = target
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
            try:
                await sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
            return await wrap_client_stream(
                nursery,
                trio.SocketStream(sock),
                host_header,
                resource,
                max_message_size=max_message_size,
            )
        except OSError as error:
            raise HandshakeError from error
    assert scope.cancelled_caught
    raise ConnectionTimeout from None


@functools.lru_cache(maxsize=64)
def _direct_target(url: str) -> tuple[int, str, int, str, str] | None:
    """``(family, host, port, Host header, resource)`` for a ``ws://`` URL whose host is an
    IP address, as trio-websocket's ``connect_websocket_url`` would make them; None for any
    other URL (left to trio-websocket, errors included). Cached: an app, or a load
    generator, connects to the same URL again and again."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        if parts.scheme != "ws" or host is None:
            return None
        address = ipaddress.ip_address(host)
        port = parts.port if parts.port is not None else 80
    except ValueError:
        return None
    resource = parts.path or "/"
    if "?" in url:
        resource += "?" + parts.query
    host_header = host if port in (80, 443) else f"{host}:{port}"
    family = trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET
    return family, host, port, host_header, resource


async def close_websocket(ws: WebSocketConnection, code: int = 1000) -> None:
    """Close as ``open_websocket`` does on exit (``DisconnectionTimeout`` after
    ``DISCONNECT_TIMEOUT``), and close the TCP stream if trio-websocket left it open."""
    try:
        with trio.CancelScope(deadline=trio.current_time() + DISCONNECT_TIMEOUT) as scope:
            await ws.aclose(code)
        if scope.cancelled_caught:
            raise DisconnectionTimeout from None
    finally:
        await _close_stream(ws)


async def _close_stream(ws: WebSocketConnection) -> None:
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.SocketStream) and stream.socket.fileno() == -1:
        return  # already closed (the usual case): no shielded checkpoint needed
    if isinstance(stream, trio.abc.AsyncResource):
        with trio.CancelScope(shield=True):
            await stream.aclose()
