"""Slow and vanished clients over real sockets.

* A client that stops reading fills its send queue (here: the byte bound) and is closed
  as a slow consumer (4050); after reconnecting it catches up and has lost nothing.
* A peer that stops answering pings, behind a TCP connection that went silent without a
  FIN or RST (half-open, simulated by a proxy that stops forwarding), is dropped after a
  bounded time and everything the server held for it is freed.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Request

from client import RivetClient
from protocol.errors import CloseCode
from protocol.events import MessageEvent
from protocol.ids import direct_conversation_id
from server.app import RunningServer, serve
from server.metrics import METRICS
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config
from tests.e2e.waiting import wait_until


@pytest.fixture
async def tight(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Harness]:
    notifier = MemoryNotifier()
    config = make_config(
        tmp_path,
        send_queue_bytes=64 * 1024,
        send_rate_per_second=10_000,
        send_burst=10_000,
        heartbeat_seconds=0.3,
    )
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    yield Harness(running, notifier)
    running.shutdown()


class StalledClient:
    """A WebSocket client on a socket with a tiny receive buffer that it stops reading."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    @classmethod
    async def open(cls, port: int) -> StalledClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(client.ws.send(Request(host="127.0.0.1", target="/")))
        await client._next(AcceptConnection)
        return client

    async def request(self, frame: dict[str, object]) -> bytes:
        await self.stream.send_all(self.ws.send(BytesMessage(data=msgspec.msgpack.encode(frame))))
        event = await self._next(BytesMessage)
        assert isinstance(event, BytesMessage)
        return bytes(event.data)

    async def _next(self, kind: type) -> object:
        with trio.fail_after(5):
            while True:
                for event in self.ws.events():
                    if isinstance(event, kind):
                        return event
                self.ws.receive_data(await self.stream.receive_some(65536))


async def test_a_client_that_stops_reading_is_closed_4050_and_loses_nothing(
    tight: Harness,
) -> None:
    alice, bob = await tight.new_user(), await tight.new_user()
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    async with RivetClient.connect(tight.url, alice) as a:
        await a.catch_up()  # alice's device has a sync token from before the burst
    slow_closes = METRICS.closes.get(CloseCode.SLOW_CONSUMER)
    stalled = await StalledClient.open(tight.server.port)
    hello = await stalled.request(
        {"op": "hello", "rid": 1, "version": 1, "token": alice.access_token}
    )
    assert b"session" in hello
    sent = []
    async with RivetClient.connect(tight.url, bob) as b:
        for i in range(400):
            sent.append((await b.send(conv, f"{i:04d} " + "x" * 7_000)).seq)
            if METRICS.closes.get(CloseCode.SLOW_CONSUMER) > slow_closes:
                break
        # A few more after the close: they must reach alice too.
        for i in range(5):
            sent.append((await b.send(conv, f"after {i}")).seq)
    assert METRICS.closes.get(CloseCode.SLOW_CONSUMER) == slow_closes + 1
    with trio.fail_after(5):
        await wait_until(lambda: not tight.server.ctx.hub.connection_count(alice.user_id))
    await trio.aclose_forcefully(stalled.stream)
    # Reconnected, alice catches up from her token: every message, once, in order.
    async with RivetClient.connect(tight.url, alice) as a:
        fresh = await a.catch_up()
    seqs = [e.seq for e in fresh if isinstance(e, MessageEvent) and e.conv == conv]
    assert seqs == sent


class Proxy:
    """Forwards one TCP connection until ``go_silent``: then nothing passes either way and
    nothing is closed, as when a peer's network vanishes."""

    def __init__(self) -> None:
        self.silent = trio.Event()
        self.port = 0

    async def run(self, target: int, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        async with listeners[0]:
            client = await listeners[0].accept()
        upstream = await trio.open_tcp_stream("127.0.0.1", target)
        async with client, upstream:
            async with trio.open_nursery() as pumps:
                pumps.start_soon(self._pump, client, upstream)
                pumps.start_soon(self._pump, upstream, client)
                await self.silent.wait()
                pumps.cancel_scope.cancel()
            await trio.sleep_forever()  # both sockets stay open and say nothing

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while data := await source.receive_some(65536):
            await sink.send_all(data)


async def test_a_peer_that_goes_silent_is_dropped_and_freed(tight: Harness) -> None:
    alice = await tight.new_user()
    hub = tight.server.ctx.hub
    heartbeats = METRICS.closes.get(CloseCode.HEARTBEAT_TIMEOUT)
    proxy = Proxy()
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run, tight.server.port)
        via_proxy = f"ws://127.0.0.1:{proxy.port}/"
        async with RivetClient.connect(via_proxy, alice) as a:
            await a.catch_up()
            assert hub.is_online(alice.user_id or 0)
            await trio.sleep(0.8)  # pings come and go through the proxy
            assert hub.is_online(alice.user_id or 0)
            proxy.silent.set()
            started = trio.current_time()
            with trio.fail_after(8):
                await wait_until(
                    lambda: (
                        not hub.is_online(alice.user_id or 0)
                        and not tight.server.gateway.open_connections
                    )
                )
            elapsed = trio.current_time() - started
            # The SDK's side is a dead end too: cancel rather than wait for its close.
            nursery.cancel_scope.cancel()
    # Two heartbeat intervals to notice, up to two seconds to give up on the close.
    assert elapsed < 2 * 0.3 + 2.0 + 1.5, elapsed
    assert METRICS.closes.get(CloseCode.HEARTBEAT_TIMEOUT) == heartbeats + 1
    assert tight.server.gateway.statistics()["queued_bytes"] == 0
