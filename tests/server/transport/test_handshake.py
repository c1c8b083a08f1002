"""``server.transport.handshake`` over real loopback sockets: accepted upgrades, refusals
with their HTTP status and body, non-WebSocket requests, oversized requests, deadline."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio
import trio.testing
from trio_websocket import open_websocket

from server.transport import ConnectionClosed, WebSocket
from server.transport.handshake import MAX_REQUEST_BYTES, Upgrade, read_upgrade
from tests.server.transport.helpers import DEADLINE, read_all, start_server, upgrade_request


async def _echo(ws: WebSocket) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send_message(await ws.receive())  # type: ignore[arg-type]


async def test_an_upgrade_is_accepted_and_a_binary_message_goes_both_ways() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, _echo)
            async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as client:
                await client.send_message(b"\x00hello")
                assert await client.get_message() == b"\x00hello"
            nursery.cancel_scope.cancel()


async def _answers(*requests: Callable[[int], bytes]) -> list[bytes]:
    """What the echo server answers each request (given its port), each on a connection
    of its own, read to the end of the stream."""
    answers = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, _echo)
            for request in requests:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(request(port))
                    answers.append(await read_all(stream))
            nursery.cancel_scope.cancel()
    return answers


async def test_a_rejection_has_its_status_and_body_and_closes() -> None:
    [answer] = await _answers(lambda port: upgrade_request("/reject", port))
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert answer.endswith(b"\r\n\r\nnot you")


async def test_a_request_that_is_not_an_upgrade_gets_400() -> None:
    [answer] = await _answers(lambda _: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_bad_http_gets_400_and_a_wrong_version_426() -> None:
    not_http, wrong_version = await _answers(
        lambda _: b"\x16\x03\x01 not http at all\r\n\r\n",
        lambda port: upgrade_request(port=port).replace(b"Version: 13", b"Version: 8"),
    )
    assert not_http.startswith(b"HTTP/1.1 400 ")
    assert wrong_version.startswith(b"HTTP/1.1 426 ")
    assert b"sec-websocket-version: 13" in wrong_version.lower()


async def test_a_request_over_the_size_cap_gets_431() -> None:
    # Just over the cap, and no end of headers: the server reads it all (so it closes with
    # a FIN, not a reset that would discard the answer).
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: "
    [answer] = await _answers(lambda _: request + b"a" * (MAX_REQUEST_BYTES + 100 - len(request)))
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_silent_peer_is_dropped_at_the_deadline() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, _echo)
            for sent in (b"", b"GET / HTTP/1.1\r\nHost: x\r\n"):
                # Timed from before the connection: the server's deadline starts when it
                # accepts, so the drop can come no sooner than DEADLINE after this, however
                # long a loaded machine takes to connect and send.
                started = trio.current_time()
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(sent)
                    assert await read_all(stream) == b""
                    assert DEADLINE * 0.9 < trio.current_time() - started < DEADLINE + 1
            nursery.cancel_scope.cancel()


async def test_frames_sent_right_behind_the_request_are_not_lost() -> None:
    import wsproto
    from wsproto.events import BytesMessage, Request

    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    upgrade = client.send(Request(host="127.0.0.1", target="/"))
    # The frame cannot be built before the 101 with wsproto's client; build it by hand.
    frame_client = wsproto.connection.Connection(wsproto.ConnectionType.CLIENT)
    early = frame_client.send(BytesMessage(data=b"early"))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            got: list[bytes | str] = []

            async def on_open(ws: WebSocket) -> None:
                got.append(await ws.receive())

            port = await start_server(nursery, on_open)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(upgrade + early)
                await read_all(stream)
            nursery.cancel_scope.cancel()
    assert got == [b"early"]


async def test_a_target_that_is_not_ascii_gets_400() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, _echo)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                raw = upgrade_request("/cafe", port).replace(b"/cafe", "/café".encode())
                await stream.send_all(raw)
                answer = await read_all(stream)
            assert answer.startswith(b"HTTP/1.1 400 ")
            nursery.cancel_scope.cancel()


def test_the_handshake_state_read_for_trailing_data_is_there() -> None:
    # Upgrade.accept reads h11's bytes past the request from wsproto's H11Handshake (its
    # one private attribute read here; wsproto's client path reads it the same way).
    from wsproto.connection import ConnectionType
    from wsproto.handshake import H11Handshake

    handshake = H11Handshake(ConnectionType.SERVER)
    assert handshake._h11_connection.trailing_data == (b"", False)


async def test_an_open_connection_keeps_no_http_state() -> None:
    # Without the network: a client in memory. The H11Handshake (h11's connection and its
    # buffers, ~1.8 KiB) is dropped once the upgrade is answered.
    import gc

    import wsproto
    from wsproto.events import Request
    from wsproto.handshake import H11Handshake

    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with trio.fail_after(5):
        await client_stream.send_all(client.send(Request(host="x", target="/")))
        upgrade = await read_upgrade(server_stream)
        assert upgrade is not None and upgrade.path == "/"
        ws = await upgrade.accept(max_message_size=1024)
        client.receive_data(await client_stream.receive_some())

    def reachable(root: object, depth: int = 3) -> list[object]:
        found, layer = [], [root]
        for _ in range(depth):
            layer = [r for o in layer for r in gc.get_referents(o)]
            found += layer
        return found

    assert not any(isinstance(o, H11Handshake) for o in reachable(ws))
    assert not any(isinstance(o, H11Handshake) for o in reachable(upgrade))
    assert await upgrade_still_refuses(upgrade)


async def upgrade_still_refuses(upgrade: Upgrade) -> bool:
    """An upgrade is answered once."""
    try:
        await upgrade.accept(max_message_size=1)
    except RuntimeError:
        return True
    return False
