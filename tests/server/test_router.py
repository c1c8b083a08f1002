"""The router without a network: frames in, exactly one reply out, decisions enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from server.config import Config
from server.router import Router
from storage.errors import StoreUnavailable
from storage.memory import open_memory_stores
from tests.server.routers import build_router, call, connect, frames, login


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(store="memory", data_dir=tmp_path, send_rate_per_second=1, send_burst=3)
    async with open_memory_stores() as stores:
        yield build_router(config, stores)


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
