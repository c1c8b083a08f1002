"""A hostile run against a real ``rivet serve`` (SQLite): many connections send every class
of malformed input at once (broken MessagePack, wrong types, oversized and deeply nested
frames, text frames, floods of pings and empty frames, WebSocket ping floods, raw garbage
instead of HTTP, upgrades and handshakes that never finish) while two users chat.

Each attack gets its documented error or close code; the users' messages all arrive;
nothing the attackers sent is stored; the server's RSS grows by less than 50 MB.
"""

from __future__ import annotations

import contextlib
import sqlite3
from functools import partial
from pathlib import Path

import msgspec
import trio
import wsproto
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import AcceptConnection, Ping, Request

from client import ClientState, RivetClient
from protocol import limits
from protocol import requests as rq
from protocol.errors import CloseCode
from protocol.ids import direct_conversation_id
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config
from tests.e2e.processes import create_users, rivet_server
from tests.e2e.test_malformed import MALFORMED, authed, raw

enc = msgspec.msgpack.encode
RSS_BUDGET = 50 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _until_closed(ws: WebSocketConnection) -> int | None:
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code if closed.reason else None


async def _send_all_reading(ws: WebSocketConnection, frames: list[bytes]) -> int | None:
    """Send ``frames`` while reading everything the server says; the close code."""
    async with trio.open_nursery() as nursery:
        closed: list[int | None] = []

        async def read() -> None:
            closed.append(await _until_closed(ws))
            nursery.cancel_scope.cancel()

        nursery.start_soon(read)
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send_message(frame)
        await trio.sleep_forever()  # until the reader sees the close
    return closed[0]


async def malformed_sender(url: str, token: str, codes: list[int | None]) -> None:
    """Every malformed frame, over and over: ends closed with 4006 or 4051."""
    async with raw(url) as ws:
        await authed(url, token, ws)
        codes.append(await _send_all_reading(ws, [f for _, f, _ in MALFORMED] * 15))


async def one_shot(url: str, frame: bytes | str, codes: list[int | None]) -> None:
    async with raw(url) as ws:
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(frame)
        codes.append(await _until_closed(ws))


async def flooder(url: str, token: str, empty: bool, codes: list[int | None]) -> None:
    """Pings (and empty frames) as fast as possible: rate_limited, then 4051."""
    frames = [b"" if empty and i % 2 else enc({"op": "ping", "rid": i}) for i in range(3_000)]
    async with raw(url) as ws:
        await authed(url, token, ws)
        codes.append(await _send_all_reading(ws, frames))


async def control_ping_flood(port: int, count: int = 2_000) -> None:
    """WebSocket-level pings (answered by the WebSocket layer) without ever authenticating:
    the server drops the connection at the handshake deadline, pings still coming."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
        with trio.fail_after(5):
            while not any(isinstance(e, AcceptConnection) for e in ws.events()):
                ws.receive_data(await stream.receive_some(65536))
        with trio.fail_after(10), contextlib.suppress(trio.BrokenResourceError):
            for _ in range(count):
                await stream.send_all(ws.send(Ping(payload=b"x" * 100)))
                await trio.sleep(0.001)


async def garbage_and_stalls(port: int) -> None:
    """Bytes that are not HTTP; an upgrade that never ends; a socket that says nothing."""
    for payload in (b"\x16\x03\x01garbage" * 100, b"GET / HTTP/1.1\r\nHost: x\r\n", b""):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)
            with trio.fail_after(10):  # the server hangs up, at the latest at the deadline
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass


async def never_authenticates(url: str, codes: list[int | None]) -> None:
    async with raw(url) as ws:
        await ws.send_message(enc({"op": "hello", "rid": 1, "version": 1}))
        codes.append(await _until_closed(ws))


async def chat(url: str, alice: ClientState, bob: ClientState, done: list[int]) -> None:
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    async with RivetClient.connect(url, alice) as a, RivetClient.connect(url, bob) as b:
        for i in range(60):
            ack = await a.send(conv, f"legit {i}")
            with trio.fail_after(10):
                assert (await b.next_message(conv=conv)).seq == ack.seq
            done.append(ack.seq)
            await trio.sleep(0.02)


async def test_a_hostile_run_gets_its_codes_stores_nothing_and_stays_small(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    alice, bob, *attackers = create_users(data, 6)
    tokens = [a.access_token or "" for a in attackers]
    args = ("--handshake-deadline", "1", "--flood-strikes", "30")
    async with rivet_server(data, *args) as (process, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        warm: list[int] = []
        await chat(url, alice, bob, warm)  # warm up the paths the legit users take
        baseline = rss_bytes(process.pid)
        closes: dict[str, list[int | None]] = {
            "malformed": [],
            "oversized": [],
            "text": [],
            "flood": [],
            "unauthenticated": [],
        }
        delivered: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chat, url, alice, bob, delivered)
            for round_ in range(3):
                for token in tokens:
                    nursery.start_soon(malformed_sender, url, token, closes["malformed"])
                    nursery.start_soon(flooder, url, token, bool(round_ % 2), closes["flood"])
                big = b"\x81" + b"\x00" * (limits.MAX_FRAME_BYTES + 10)
                for _ in range(10):
                    nursery.start_soon(one_shot, url, big, closes["oversized"])
                    nursery.start_soon(one_shot, url, '{"op":"hello"}', closes["text"])
                    nursery.start_soon(never_authenticates, url, closes["unauthenticated"])
                nursery.start_soon(control_ping_flood, port)
                nursery.start_soon(garbage_and_stalls, port)
                await trio.sleep(0.5)
        grown = rss_bytes(process.pid) - baseline

    assert len(delivered) == 60, "the legit users' messages did not all arrive"
    assert set(closes["malformed"]) <= {CloseCode.TOO_MANY_ERRORS, CloseCode.FLOOD}
    assert closes["oversized"] == [CloseCode.MESSAGE_TOO_BIG] * 30
    assert closes["text"] == [CloseCode.UNSUPPORTED_DATA] * 30
    assert set(closes["flood"]) <= {CloseCode.FLOOD, CloseCode.TOO_MANY_ERRORS}
    assert CloseCode.FLOOD in closes["flood"] and len(closes["flood"]) == 12
    assert closes["unauthenticated"] == [CloseCode.HANDSHAKE_TIMEOUT] * 30
    attacker_ids = [a.user_id for a in attackers]
    with sqlite3.connect(f"file:{data / 'cross.db'}?mode=ro", uri=True) as db:
        marks = ",".join("?" * len(attacker_ids))
        stored = db.execute(f"SELECT count(*) FROM entries WHERE sender IN ({marks})", attacker_ids)
        assert stored.fetchone()[0] == 0
        (legit,) = db.execute("SELECT count(*) FROM entries WHERE kind = 'message'").fetchone()
        assert legit == 120
    assert grown < RSS_BUDGET, f"RSS grew by {grown / 2**20:.1f} MiB"


async def test_pings_while_the_server_closes_do_not_take_it_down(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Regression: a ping answered while the connection closes raised inside the WebSocket
    library's task and, unisolated, would have ended the whole server."""
    notifier = MemoryNotifier()
    config = make_config(tmp_path, handshake_deadline=0.3)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    async with trio.open_nursery() as attackers:
        for _ in range(6):
            attackers.start_soon(control_ping_flood, running.port, 1_500)
    harness = Harness(running, notifier)
    alice = await harness.new_user()
    async with RivetClient.connect(harness.url, alice) as a:
        assert (await a.request(rq.Ping(rid=0))).server_time > 0
    running.shutdown()
