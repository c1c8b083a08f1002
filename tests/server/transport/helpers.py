"""A server on loopback made of the transport alone (no gateway), and raw clients."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import trio
import wsproto
from wsproto.events import AcceptConnection, Request

from server.transport import WebSocket, listener
from server.transport.handshake import read_upgrade
from tests.certificates import self_signed_files

MAX_MESSAGE = 64 * 1024
DEADLINE = 1.0

OnOpen = Callable[[WebSocket], Awaitable[None]]


async def start_server(
    nursery: trio.Nursery, on_open: OnOpen, *, tls: ssl.SSLContext | None = None
) -> int:
    """Serve ``on_open(ws)`` for every accepted upgrade, like the gateway does (upgrade
    within a deadline, the stream closed at the end); the port."""

    async def serve_connection(stream: trio.abc.Stream) -> None:
        try:
            ws = None
            with trio.move_on_after(DEADLINE):
                upgrade = await read_upgrade(stream)
                if upgrade is None:
                    return
                if upgrade.path.startswith("/reject"):
                    await upgrade.reject(403, b"not you")
                    return
                ws = await upgrade.accept(max_message_size=MAX_MESSAGE)
            if ws is not None:
                try:
                    await on_open(ws)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await ws.aclose()
        finally:
            await trio.aclose_forcefully(stream)

    port: int = await nursery.start(
        lambda task_status: listener.serve(
            serve_connection,
            host="127.0.0.1",
            port=0,
            tls=tls,
            handler_nursery=nursery,
            task_status=task_status,
        )
    )
    return port


def upgrade_request(path: str = "/", port: int = 0) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything until the server closes (bounded by the caller's timeout)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


class RawClient:
    """A wsproto client on a plain socket: sends what it is told, frames or bytes."""

    #: Every client opened, for ``close_all`` (tests close them all at the end).
    opened: ClassVar[list[RawClient]] = []

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        #: Events read with the 101, not yet returned by ``events``.
        self.pending: list[wsproto.events.Event] = []
        RawClient.opened.append(self)

    @classmethod
    async def close_all(cls) -> None:
        while cls.opened:
            await trio.aclose_forcefully(cls.opened.pop().stream)

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(client.ws.send(Request(host="127.0.0.1", target="/")))
        while True:
            events = await client.events()
            for i, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    client.pending = events[i + 1 :]
                    return client

    async def send(self, event: wsproto.events.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def events(self) -> list[wsproto.events.Event]:
        """The next batch of events (reads until there is at least one)."""
        if self.pending:
            events, self.pending = self.pending, []
            return events
        while True:
            events = list(self.ws.events())
            if events:
                return events
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for 127.0.0.1, and a client
    context that trusts it."""
    cert_path, key_path = self_signed_files(directory)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    return server, ssl.create_default_context(cafile=str(cert_path))
