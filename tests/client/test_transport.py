"""The client transport's one reach into trio-websocket internals stays valid, and its own
connect (one nursery per connection, a direct socket for an IP address) behaves as
trio-websocket's ``open_websocket_url``."""

from __future__ import annotations

import gc
import warnings
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError
from trio_websocket._impl import _url_to_host

from bench.harness import free_port
from client.connection import RivetConnection
from client.transport import _direct_target, open_websocket
from protocol import replies
from protocol import requests as rq
from protocol.version import PROTOCOL_VERSION
from server.app import RunningServer, serve
from server.config import Config
from server.notify.memory import MemoryNotifier


async def test_server_initiated_close_leaves_no_open_socket(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = Config(port=0, store="memory", data_dir=tmp_path)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    async with open_websocket(running.url) as ws:
        assert isinstance(ws._stream, trio.SocketStream)  # the private attribute we close
        await ws.send_message(msgspec.msgpack.encode({"op": "sync", "rid": 1}))
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
    assert ws._stream.socket.fileno() == -1  # closed by us, not left to the GC
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gc.collect()
    running.shutdown()


@pytest.mark.parametrize(
    "url",
    ["ws://127.0.0.1:8080", "ws://127.0.0.1:8080/a/b?c=1&d", "ws://10.0.0.1", "ws://[::1]:9/"],
)
def test_direct_target_is_what_trio_websocket_would_connect_to(url: str) -> None:
    target = _direct_target(url)
    assert target is not None
    _, host, port, host_header, resource = target
    assert (host, port, resource, False) == _url_to_host(url, None)
    assert host_header == (host if port in (80, 443) else f"{host}:{port}")


@pytest.mark.parametrize(
    "url", ["ws://localhost:8080/", "wss://127.0.0.1/", "http://127.0.0.1/", "ws://1.2.3.4:99999"]
)
def test_other_urls_are_left_to_trio_websocket(url: str) -> None:
    assert _direct_target(url) is None


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
    assert isinstance(ws._stream, trio.SocketStream)
    assert ws._stream.socket.fileno() == -1
    running.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_refused_connection_is_a_handshake_error(host: str) -> None:
    with pytest.raises(HandshakeError) as caught:
        async with RivetConnection.open(f"ws://{host}:{free_port()}/"):
            pass
    assert isinstance(caught.value.__cause__, OSError)
