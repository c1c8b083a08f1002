"""The HTTP upgrade (RFC 6455 §4.2): read the request, then accept or reject it.

wsproto's ``H11Handshake`` parses the request and checks that it is a WebSocket upgrade;
``read_upgrade`` feeds it what the stream gives (a TLS handshake happens on the first read)
and hands the caller an ``Upgrade``: its path and headers, for ``server.admission`` to
decide on, and ``accept`` or ``reject``. The caller bounds the whole upgrade in time (the
gateway: ``handshake_deadline``); the size of the request is bounded here.

Anything that is not a WebSocket upgrade gets its HTTP answer here and the stream is
closed: a request that is not an upgrade 400 (426 for a wrong ``Sec-WebSocket-Version``,
as wsproto hints), HTTP that does not parse 400, a request past ``MAX_REQUEST_BYTES`` 431.
Nothing raises out of ``read_upgrade`` for what a peer sends.

Once accepted, the HTTP state (h11's connection and buffers) is dropped: the open
connection keeps only wsproto's frame parser (``server.transport.websocket``). We never
negotiate an extension (no permessage-deflate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final

import trio
from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from server.transport.websocket import ConnectionClosed, WebSocket

__all__ = ["MAX_REQUEST_BYTES", "Upgrade", "read_upgrade"]

#: The most bytes an upgrade request may take (request line and headers).
MAX_REQUEST_BYTES: Final = 16 * 1024
_RECEIVE_BYTES: Final = 4096

_REASONS: Final = {
    400: b"Bad Request",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
}


class Upgrade:
    """An upgrade request that came in: ``accept`` or ``reject`` it, once."""

    __slots__ = ("_handshake", "_stream", "headers", "path")

    def __init__(self, stream: trio.abc.Stream, handshake: H11Handshake, request: Request) -> None:
        self._stream = stream
        self._handshake: H11Handshake | None = handshake
        #: The request target (path and query).
        self.path: str = request.target
        #: The request's headers, names lower-cased (wsproto leaves out ``Host``,
        #: ``Sec-WebSocket-Extensions`` and ``Sec-WebSocket-Protocol``).
        self.headers: Sequence[tuple[bytes, bytes]] = request.extra_headers

    def _take(self) -> H11Handshake:
        handshake = self._handshake
        if handshake is None:
            raise RuntimeError("the upgrade was already accepted or rejected")
        self._handshake = None  # an open connection keeps no HTTP state
        return handshake

    async def reject(self, status: int, body: bytes = b"") -> None:
        """Answer with an HTTP ``status`` and ``body``, then close the stream."""
        handshake = self._take()
        headers = [(b"content-type", b"text/plain")]
        if body:  # without one wsproto adds ``content-length: 0`` itself
            headers.append((b"content-length", b"%d" % len(body)))
        data = handshake.send(
            RejectConnection(status_code=status, headers=headers, has_body=bool(body))
        )
        if body:
            data += handshake.send(RejectData(data=body, body_finished=True))
        await _send_and_close(self._stream, data)

    async def accept(self, *, max_message_size: int) -> WebSocket:
        """Switch protocols (101) and return the open connection. Bytes the client sent
        after its request (frames sent without waiting for the 101) are kept.
        ``ConnectionClosed`` (1006) if the peer has gone."""
        handshake = self._take()
        data = handshake.send(AcceptConnection())
        # What h11 read past the request. wsproto's own server path drops it; its client
        # path reads it the same way (``H11Handshake._establish_client_connection``).
        trailing, _ = handshake._h11_connection.trailing_data
        proto = Protocol(ConnectionType.SERVER, trailing_data=bytes(trailing))
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "the peer left") from None
        return WebSocket(self._stream, proto, max_message_size=max_message_size)


async def read_upgrade(stream: trio.abc.Stream) -> Upgrade | None:
    """Read an upgrade request. ``None``: there was none (the peer left, the stream broke,
    or the request was refused with an HTTP error, see the module docstring); the caller
    then only closes the stream."""
    handshake = H11Handshake(ConnectionType.SERVER)
    received = 0
    while True:
        try:
            data = await stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # includes a failed TLS handshake
        if not data:
            return None
        received += len(data)
        if received > MAX_REQUEST_BYTES:
            await _send_and_close(stream, _plain_response(431))
            return None
        try:
            handshake.receive_data(bytes(data))
            for event in handshake.events():
                if isinstance(event, Request):
                    return Upgrade(stream, handshake, event)
        except RemoteProtocolError as exc:
            await _refuse(stream, handshake, exc.event_hint)
            return None
        except UnicodeError:  # a target that is not ASCII, a host that is not IDNA
            await _refuse(stream, handshake, None)
            return None


async def _refuse(stream: trio.abc.Stream, handshake: H11Handshake, hint: object) -> None:
    """Answer a request that is not a valid upgrade with the status wsproto hints (400 but
    for a wrong version, 426). HTTP that did not parse leaves h11 unable to answer: then a
    fixed 400."""
    if not isinstance(hint, RejectConnection):
        hint = RejectConnection()
    try:
        data = handshake.send(
            RejectConnection(
                status_code=hint.status_code,
                headers=[*hint.headers, (b"connection", b"close")],
                has_body=False,
            )
        )
    except LocalProtocolError:
        data = _plain_response(400)
    await _send_and_close(stream, data)


def _plain_response(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (
        status,
        _REASONS[status],
    )


async def _send_and_close(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
    await trio.aclose_forcefully(stream)
