"""Opening the SDK's WebSocket from a URL: what a URL means (as trio-websocket read it), a
direct socket for an IP address, the errors and the timeout, and a stream closed however
the connection ends."""

from __future__ import annotations

import gc
import ssl
import warnings
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from bench.harness import free_port
from client import transport
from client.connection import RivetConnection
from client.transport import Target, connect_websocket, open_websocket, parse_url
from client.websocket import ConnectionClosed, ConnectionTimeout, HandshakeError
from protocol import replies
from protocol import requests as rq
from protocol.version import PROTOCOL_VERSION
from server.app import RunningServer, serve
from server.config import Config
from server.notify.memory import MemoryNotifier

INET, INET6 = trio.socket.AF_INET, trio.socket.AF_INET6


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("ws://127.0.0.1:8080", Target("127.0.0.1", 8080, "127.0.0.1:8080", "/", False, INET)),
        (
            "ws://127.0.0.1:8080/a/b?c=1&d",
            Target("127.0.0.1", 8080, "127.0.0.1:8080", "/a/b?c=1&d", False, INET),
        ),
        ("ws://10.0.0.1", Target("10.0.0.1", 80, "10.0.0.1", "/", False, INET)),
        ("ws://[::1]:9/", Target("::1", 9, "::1:9", "/", False, INET6)),
        ("ws://localhost:8080/", Target("localhost", 8080, "localhost:8080", "/", False, None)),
        ("wss://example.test/x", Target("example.test", 443, "example.test", "/x", True, None)),
        ("wss://127.0.0.1:8443/", Target("127.0.0.1", 8443, "127.0.0.1:8443", "/", True, INET)),
    ],
)
def test_what_a_url_means(url: str, target: Target) -> None:
    assert parse_url(url) == target


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "ws:///path", "ws://1.2.3.4:99999"])
def test_a_url_that_is_not_a_websocket_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


async def test_an_ssl_context_for_a_plain_url_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        await connect_websocket("ws://127.0.0.1:1/", ssl_context=ssl.create_default_context())


async def test_server_initiated_close_leaves_no_open_socket(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = Config(port=0, store="memory", data_dir=tmp_path)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    async with open_websocket(running.url) as ws:
        assert isinstance(ws.stream, trio.SocketStream)
        await ws.send_message(msgspec.msgpack.encode({"op": "sync", "rid": 1}))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.get_message()
        assert ws.closed is not None and ws.closed.code != 1006  # the server's own close
    assert ws.stream.socket.fileno() == -1  # closed by us, not left to the GC
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gc.collect()
    running.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connection_opens_requests_and_closes(
    nursery: trio.Nursery, tmp_path: Path, host: str
) -> None:
    config = Config(port=0, store="memory", data_dir=tmp_path)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    url = running.url.replace("127.0.0.1", host)
    async with RivetConnection.open(url) as conn:
        hello = await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION))
        assert isinstance(hello, replies.HelloResult)
        ws = conn.ws
    assert conn.closed.is_set()
    assert conn.close_code is None  # our own close on exit is not the server's
    assert isinstance(ws.stream, trio.SocketStream)
    assert ws.stream.socket.fileno() == -1
    running.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_refused_connection_is_a_handshake_error(host: str) -> None:
    with pytest.raises(HandshakeError) as caught:
        async with RivetConnection.open(f"ws://{host}:{free_port()}/"):
            pass
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_server_that_never_answers_the_upgrade_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()  # the kernel completes the TCP handshake; nobody ever answers
    _, port = listener.getsockname()
    try:
        started = trio.current_time()
        with pytest.raises(ConnectionTimeout):
            await connect_websocket(f"ws://127.0.0.1:{port}/")
        assert trio.current_time() - started == pytest.approx(transport.CONNECT_TIMEOUT)
    finally:
        listener.close()
