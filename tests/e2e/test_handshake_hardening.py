"""The handshake over a real socket: refusals before the upgrade (Origin 403, URL query 400,
capacity 503), the deadline for the HTTP upgrade itself, the per-user connection limit
(4053), and built-in TLS (wss://)."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio

from client import ClientState, RivetClient
from client.connection import ConnectionLost
from client.transport import open_websocket
from protocol import requests as rq
from protocol.errors import CloseCode
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.certificates import self_signed_files
from tests.e2e.conftest import Harness, make_config
from tests.e2e.waiting import wait_until


@pytest.fixture
async def hardened(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Harness]:
    notifier = MemoryNotifier()
    config = make_config(
        tmp_path,
        allowed_origins=("https://chat.example.com",),
        max_connections_per_user=2,
        max_connections=6,
        handshake_deadline=0.5,
    )
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    yield Harness(running, notifier)
    running.shutdown()


async def upgrade_status(
    harness: Harness, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> int:
    """The HTTP status the server answers a WebSocket upgrade with (101: accepted)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{harness.server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name.decode()}: {value.decode()}" for name, value in headers or []]
    stream = await trio.open_tcp_stream("127.0.0.1", harness.server.port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        with trio.fail_after(5):
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(4096)
                assert chunk, "closed without an answer"
                answer += chunk
    return int(answer.split(b" ", 2)[1])


async def test_cross_site_websocket_hijacking_is_refused_403(hardened: Harness) -> None:
    assert await upgrade_status(hardened, "/", [(b"Origin", b"https://evil.example")]) == 403
    assert await upgrade_status(hardened, "/", [(b"Origin", b"null")]) == 403
    assert await upgrade_status(hardened, "/", [(b"Origin", b"https://chat.example.com")]) == 101
    assert await upgrade_status(hardened) == 101  # native clients send no Origin


async def test_a_token_in_the_url_is_refused_400(hardened: Harness) -> None:
    alice = await hardened.new_user()
    assert await upgrade_status(hardened, f"/?token={alice.access_token}") == 400
    assert await upgrade_status(hardened, "/?x=1") == 400


async def test_capacity_is_refused_503_before_the_upgrade(hardened: Harness) -> None:
    async with trio.open_nursery() as nursery:
        opened = trio.Semaphore(0)
        release = trio.Event()

        async def hold() -> None:
            async with open_websocket(hardened.url):
                opened.release()
                await release.wait()

        for _ in range(6):
            nursery.start_soon(hold)
        for _ in range(6):
            await opened.acquire()
        assert await upgrade_status(hardened) == 503
        release.set()
    with trio.fail_after(5):
        await wait_until(lambda: not hardened.server.gateway.open_connections)
    assert await upgrade_status(hardened) == 101


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"])
async def test_an_upgrade_that_never_finishes_is_dropped_at_the_deadline(
    hardened: Harness, sent: bytes
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", hardened.server.port)
    async with stream:
        await stream.send_all(sent)
        started = trio.current_time()
        with trio.fail_after(5):
            while await stream.receive_some(4096):
                pass
        assert trio.current_time() - started < 3


async def test_one_connection_too_many_for_a_user_is_closed_4053(hardened: Harness) -> None:
    alice = await hardened.new_user()
    async with (
        RivetClient.connect(hardened.url, alice) as first,
        RivetClient.connect(hardened.url, alice),
    ):
        async with RivetClient.connect(hardened.url, _copy(alice)) as third:
            with trio.fail_after(5):
                await third.conn.closed.wait()
            assert third.conn.close_code == CloseCode.TOO_MANY_CONNECTIONS
            with pytest.raises(ConnectionLost):
                await third.request(rq.Ping(rid=0))
        assert (await first.request(rq.Ping(rid=0))).server_time > 0
    # Once one closed, a new connection is welcome again.
    async with RivetClient.connect(hardened.url, alice) as again:
        await again.request(rq.Ping(rid=0))
        assert again.conn.close_code is None


def _copy(state: ClientState) -> ClientState:
    return ClientState(
        access_token=state.access_token,
        refresh_token=state.refresh_token,
        user_id=state.user_id,
        device_id=state.device_id,
    )


async def test_built_in_tls_serves_wss(nursery: trio.Nursery, tmp_path: Path) -> None:
    cert, key = self_signed_files(tmp_path)
    notifier = MemoryNotifier()
    config = make_config(tmp_path, tls_cert=cert, tls_key=key, handshake_deadline=1.0)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    assert running.url.startswith("wss://")
    trusted = ssl.create_default_context(cafile=str(cert))
    async with open_websocket(running.url, ssl_context=trusted) as ws:
        await ws.send_message(b"\x83\xa2op\xa5hello\xa3rid\x01\xa7version\x01")
        with trio.fail_after(5):
            assert b"ok" in await ws.get_message()
    # A client that does not trust the certificate gets no connection.
    with trio.fail_after(5):
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", running.port, ssl_context=ssl.create_default_context()
        )
        with pytest.raises(trio.BrokenResourceError) as caught:
            await stream.do_handshake()
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        await trio.aclose_forcefully(stream)
    # Plain text on the TLS port is not a WebSocket: no upgrade, dropped at the deadline.
    plain = await trio.open_tcp_stream("127.0.0.1", running.port)
    async with plain:
        await plain.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while chunk := await plain.receive_some(4096):
                answer += chunk
        assert b"101" not in answer
    running.shutdown()
