"""The router without a network: frames in, exactly one reply out, decisions enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from protocol import codec
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from server.app import build_context
from server.clock import ManualClock
from server.config import Config
from server.connection import Connection
from server.context import Context
from server.credentials import Credentials
from server.notify.memory import MemoryNotifier
from server.router import Router
from storage.errors import StoreUnavailable
from storage.memory import open_memory_stores


class _NoSocket:
    """Connections here are never written to a socket: tests read the send queue."""


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(store="memory", data_dir=tmp_path, send_rate_per_second=1, send_burst=3)
    clock = ManualClock()
    async with open_memory_stores() as stores:
        ctx = build_context(
            config,
            stores,
            clock=clock,
            notifier=MemoryNotifier(),
            credentials=Credentials.open(config, clock),
        )
        yield Router(ctx)


def connect() -> Connection:
    return Connection(ws=_NoSocket(), queue_frames=64)  # type: ignore[arg-type]


def frames(conn: Connection) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(msgspec.msgpack.decode(conn._receive.receive_nowait()))
        except trio.WouldBlock:
            return out


async def call(router: Router, conn: Connection, request: rq.Request) -> dict[str, Any]:
    await router.handle_frame(conn, codec.encode_request(request))
    replies = [f for f in frames(conn) if f["op"] in ("ok", "error")]
    assert len(replies) == 1, replies
    return replies[0]


async def login(router: Router, conn: Connection, phone: str) -> int:
    ctx: Context = router.ctx
    assert (await call(router, conn, rq.Hello(rid=1, version=1)))["op"] == "ok"
    await call(router, conn, rq.LoginRequestCode(rid=2, phone=phone))
    code = ctx.notifier.last_code(phone)  # type: ignore[attr-defined]
    reply = await call(router, conn, rq.LoginVerify(rid=3, phone=phone, code=code))
    assert reply["op"] == "ok", reply
    return int(reply["result"]["session"]["user_id"])


async def test_every_frame_gets_exactly_one_reply_with_its_rid(router: Router) -> None:
    conn = connect()
    await login(router, conn, "+15550000001")
    for rid, request in enumerate(
        [rq.Ping(rid=0), rq.DevicesList(rid=0), rq.Sync(rid=0), rq.ContactsList(rid=0)], start=10
    ):
        reply = await call(router, conn, msgspec.structs.replace(request, rid=rid))
        assert reply["op"] == "ok" and reply["rid"] == rid


async def test_hello_must_come_first_and_the_connection_closes(router: Router) -> None:
    conn = connect()
    reply = await call(router, conn, rq.Ping(rid=4))
    assert reply["code"] == ErrorCode.NOT_AUTHENTICATED and reply["rid"] == 4
    assert conn.close_request is not None
    assert conn.close_request.code == CloseCode.PROTOCOL_VIOLATION


async def test_ops_need_authentication(router: Router) -> None:
    conn = connect()
    await call(router, conn, rq.Hello(rid=1, version=1))
    reply = await call(router, conn, rq.MsgHistory(rid=2, conv="s:1"))
    assert reply["code"] == ErrorCode.NOT_AUTHENTICATED


async def test_c2_per_user_send_rate_limit(router: Router) -> None:
    conn = connect()
    user = await login(router, conn, "+15550000002")
    codes = []
    for i in range(5):
        send = rq.MsgSend(rid=i, conv=f"s:{user}", cmid=f"c{i}", content=rq.Content(text="x"))
        reply = await call(router, conn, send)
        codes.append(reply.get("code"))
    assert codes[:3] == [None, None, None]
    assert codes[3:] == [ErrorCode.RATE_LIMITED, ErrorCode.RATE_LIMITED]


async def test_store_errors_become_codes_and_nothing_leaks(router: Router) -> None:
    conn = connect()
    user = await login(router, conn, "+15550000003")
    first = rq.MsgSend(rid=1, conv=f"s:{user}", cmid="same", content=rq.Content(text="a"))
    other = rq.MsgSend(rid=2, conv=f"s:{user}", cmid="same", content=rq.Content(text="b"))
    assert (await call(router, conn, first))["op"] == "ok"
    reply = await call(router, conn, other)
    assert reply["code"] == ErrorCode.IDEMPOTENCY_CONFLICT and not reply["retryable"]


async def test_a_dead_store_writer_is_unavailable_and_retryable(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connect()
    user = await login(router, conn, "+15550000009")
    store = router.ctx.conversations(f"s:{user}")

    async def dead_writer(entry: object) -> object:
        raise StoreUnavailable("msg.send: the writer stopped; whether it committed is unknown")

    monkeypatch.setattr(store, "append", dead_writer)
    send = rq.MsgSend(rid=1, conv=f"s:{user}", cmid="c", content=rq.Content(text="a"))
    reply = await call(router, conn, send)
    assert reply["code"] == ErrorCode.UNAVAILABLE and reply["retryable"], reply


async def test_malformed_frames_after_hello_keep_the_connection(router: Router) -> None:
    conn = connect()
    await login(router, conn, "+15550000004")
    await router.handle_frame(conn, b"\xc1")
    (reply,) = frames(conn)
    assert reply["code"] == ErrorCode.MALFORMED and "rid" not in reply
    assert conn.close_request is None


async def test_three_failed_authentications_close_4003(router: Router) -> None:
    conn = connect()
    assert (await call(router, conn, rq.Hello(rid=1, version=1)))["op"] == "ok"
    for rid in (2, 3, 4):
        reply = await call(router, conn, rq.Auth(rid=rid, token="v1.bogus"))
        assert reply["code"] == ErrorCode.AUTH_FAILED
    assert conn.close_request is not None
    assert conn.close_request.code == CloseCode.AUTH_FAILED


async def test_empty_messages_are_refused_with_a_path(router: Router) -> None:
    conn = connect()
    user = await login(router, conn, "+15550000005")
    empty = rq.MsgSend(rid=1, conv=f"s:{user}", cmid="e", content=rq.Content(text="  "))
    reply = await call(router, conn, empty)
    assert reply["code"] == ErrorCode.INVALID_FIELD and reply["path"] == "$.content.text"
    no_file = rq.MsgSend(rid=2, conv=f"s:{user}", cmid="f", content=rq.Content(kind="image"))
    reply = await call(router, conn, no_file)
    assert reply["code"] == ErrorCode.INVALID_FIELD and reply["path"] == "$.content.file"
