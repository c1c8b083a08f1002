"""Opening the SDK's WebSocket (``client/websocket.py``) from a URL: the TCP stream, TLS for
``wss://``, then the upgrade, all within ``CONNECT_TIMEOUT``.

For a host that is an IP address the socket is connected directly: ``trio.open_tcp_stream``
resolves the address and races connection attempts (happy eyeballs) in a nursery and task of
its own, for a single address that needs neither; that cost about a quarter of the client's
CPU for a connection in a reconnect storm. A host name goes to ``trio.open_tcp_stream``.

Errors, as trio-websocket's ``open_websocket_url`` raised them: ``ValueError`` for a URL
that is not ``ws://``/``wss://`` (or an ``ssl_context`` with ``ws://``); ``HandshakeError``
for a network or TLS error (the ``OSError`` or ``BrokenResourceError`` as its cause) or a
malformed answer; its subclasses ``ConnectionRejected`` for a refused upgrade (status and
body) and ``ConnectionTimeout``.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import trio

from client.websocket import (
    MAX_MESSAGE_SIZE,
    ClientWebSocket,
    ConnectionTimeout,
    HandshakeError,
    upgrade,
)

#: trio-websocket's default, kept: the TCP connect, TLS and the upgrade together.
CONNECT_TIMEOUT = 60.0


class Target(NamedTuple):
    """Where a URL says to connect, and what to ask for."""

    host: str
    port: int
    #: The ``Host`` header: the host, with the port unless it is 80 or 443 (as trio-websocket).
    host_header: str
    #: The request target: the path ("/" if none) and the query.
    resource: str
    secure: bool
    #: The address family when ``host`` is an IP address (connected directly), else None.
    family: int | None


@functools.lru_cache(maxsize=64)
def parse_url(url: str) -> Target:
    """Cached: an app, or a load generator, connects to the same URL again and again."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    host = parts.hostname
    if host is None:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port if parts.port is not None else (443 if secure else 80)
    resource = parts.path or "/"  # RFC 7230 §5.3.1: an empty path is sent as "/"
    if "?" in url:
        resource += "?" + parts.query
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        family = None
    else:
        family = trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET
    host_header = host if port in (80, 443) else f"{host}:{port}"
    return Target(host, port, host_header, resource, secure, family)


async def connect_websocket(
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientWebSocket:
    """An open WebSocket to ``url`` (``ssl_context`` for ``wss://``; None: the system's
    trusted CAs). The caller closes it (``aclose``). Errors: see the module's docstring."""
    target = parse_url(url)
    if ssl_context is not None and not target.secure:
        raise ValueError("an ssl_context is for wss:// URLs")
    # A bare CancelScope, not ``trio.fail_after``: one generator less per connection.
    with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT) as scope:
        stream: trio.abc.Stream | None = None
        try:
            stream = await _open_stream(target)
            if target.secure:
                stream = trio.SSLStream(
                    stream,
                    ssl_context or ssl.create_default_context(),
                    server_hostname=target.host,
                    https_compatible=True,
                )
                await stream.do_handshake()
            return await upgrade(
                stream,
                host=target.host_header,
                resource=target.resource,
                max_message_size=max_message_size,
            )
        except BaseException as error:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if isinstance(error, (OSError, trio.BrokenResourceError)):
                raise HandshakeError(f"cannot connect to {url}: {error}") from error
            raise
    assert scope.cancelled_caught
    raise ConnectionTimeout from None


async def _open_stream(target: Target) -> trio.SocketStream:
    if target.family is None:
        return await trio.open_tcp_stream(target.host, target.port)
    sock = trio.socket.socket(target.family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((target.host, target.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[ClientWebSocket]:
    """``connect_websocket``, closed on exit (``aclose``: the stream is always closed)."""
    ws = await connect_websocket(url, max_message_size=max_message_size, ssl_context=ssl_context)
    try:
        yield ws
    finally:
        await ws.aclose()
