"""Hostile and broken input over a real WebSocket: each class gets its documented error or
close code, nothing is stored, and other users keep chatting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from client import RivetClient, RivetError
from client.transport import open_websocket
from protocol import limits
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config

enc = msgspec.msgpack.encode


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket(url) as ws:
        yield ws


async def reply(ws: WebSocketConnection) -> dict[str, object]:
    with trio.fail_after(5):
        data = await ws.get_message()
    assert isinstance(data, bytes)
    decoded = msgspec.msgpack.decode(data)
    assert isinstance(decoded, dict)
    return decoded


async def close_code(ws: WebSocketConnection) -> int:
    with trio.fail_after(5):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code
    raise AssertionError("unreachable")


async def authed(url: str, token: str, ws: WebSocketConnection) -> None:
    await ws.send_message(enc({"op": "hello", "rid": 1, "version": 1, "token": token}))
    answer = await reply(ws)
    assert answer["op"] == "ok", answer


MALFORMED: list[tuple[str, bytes, ErrorCode]] = [
    ("not msgpack", b"\xc1\xc1\xc1", ErrorCode.MALFORMED),
    ("truncated", enc({"op": "ping", "rid": 5})[:-2], ErrorCode.MALFORMED),
    ("trailing bytes", enc({"op": "ping", "rid": 5}) + b"\x00", ErrorCode.MALFORMED),
    ("huge declared length", b"\x82\xa2op\xa4ping\xa3rid\xdb\xff\xff\xff\xff", ErrorCode.MALFORMED),
    ("not a map", enc([1, 2, 3]), ErrorCode.MALFORMED),
    ("non-string key", b"\x83\xa2op\xa4ping\xa3rid\x05\x01\x02", ErrorCode.MALFORMED),
    ("ext type", b"\x83\xa2op\xa4ping\xa3rid\x05\xa1x\xd4\x05\x00", ErrorCode.UNSUPPORTED_TYPE),
    ("invalid utf-8", b"\x83\xa2op\xa4ping\xa3rid\x05\xa1x\xa2\xff\xfe", ErrorCode.MALFORMED),
    ("unknown op", enc({"op": "teleport", "rid": 5}), ErrorCode.UNKNOWN_OP),
    ("missing field", enc({"op": "msg.send", "rid": 5, "conv": "s:1"}), ErrorCode.INVALID_FIELD),
    (
        "wrong type",
        enc({"op": "read", "rid": 5, "conv": "s:1", "seq": "x"}),
        ErrorCode.INVALID_FIELD,
    ),
    (
        "out of range",
        enc({"op": "read", "rid": 5, "conv": "s:1", "seq": 2**53}),
        ErrorCode.INVALID_FIELD,
    ),
    ("negative", enc({"op": "read", "rid": 5, "conv": "s:1", "seq": -1}), ErrorCode.INVALID_FIELD),
    (
        "oversized text",
        enc(
            {
                "op": "msg.send",
                "rid": 5,
                "conv": "s:1",
                "cmid": "c",
                "content": {"text": "x" * (limits.MAX_TEXT_CHARS + 1)},
            }
        ),
        ErrorCode.TOO_LARGE,
    ),
    (
        "oversized list",
        enc({"op": "users.get", "rid": 5, "user_ids": list(range(1, 1000))}),
        ErrorCode.TOO_LARGE,
    ),
]


def _nest(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


MALFORMED.append(
    ("deep nesting", enc({"op": "ping", "rid": 5, "x": _nest(40)}), ErrorCode.TOO_DEEP)
)


@pytest.mark.parametrize(("name", "frame", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_frame_gets_its_code_and_the_connection_keeps_serving(
    harness: Harness, name: str, frame: bytes, code: ErrorCode
) -> None:
    alice = await harness.new_user()
    assert alice.access_token
    async with raw(harness.url) as ws:
        await authed(harness.url, alice.access_token, ws)
        await ws.send_message(frame)
        answer = await reply(ws)
        assert answer["op"] == "error"
        assert answer["code"] == code, answer
        await ws.send_message(enc({"op": "ping", "rid": 9}))
        assert (await reply(ws))["op"] == "ok"
    async with RivetClient.connect(harness.url, alice) as a:
        history = await a.request(rq.MsgHistory(rid=0, conv=f"s:{alice.user_id}"))
        assert history.messages == []  # nothing was stored


async def test_other_users_keep_chatting_while_one_sends_garbage(harness: Harness) -> None:
    alice, bob, mallory = [await harness.new_user() for _ in range(3)]
    conv = direct_conversation_id(alice.user_id, bob.user_id)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
        raw(harness.url) as evil,
    ):
        await authed(harness.url, mallory.access_token, evil)
        for i, (_, frame, _) in enumerate(MALFORMED * 2):
            await evil.send_message(frame)
            ack = await a.send(conv, f"still here {i}")
            with trio.fail_after(5):
                got = await b.next_message(conv=conv)
            assert got.seq == ack.seq


async def test_first_frame_must_be_hello(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message(enc({"op": "sync", "rid": 1}))
        answer = await reply(ws)
        assert answer["code"] == ErrorCode.NOT_AUTHENTICATED
        assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_garbage_before_hello_closes(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message(b"\xc1")
        assert (await reply(ws))["code"] == ErrorCode.MALFORMED
        assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_ops_before_authentication_are_refused(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message(enc({"op": "hello", "rid": 1, "version": 1}))
        assert (await reply(ws))["op"] == "ok"
        await ws.send_message(
            enc(
                {
                    "op": "msg.send",
                    "rid": 2,
                    "conv": "s:1",
                    "cmid": "x",
                    "content": {"text": "sneaky"},
                }
            )
        )
        assert (await reply(ws))["code"] == ErrorCode.NOT_AUTHENTICATED
        assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_unsupported_version_closes_4002(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message(enc({"op": "hello", "rid": 1, "version": 99}))
        assert (await reply(ws))["op"] == "error"
        assert await close_code(ws) == CloseCode.UNSUPPORTED_VERSION


async def test_text_frames_close_1003(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message('{"op": "hello"}')
        assert await close_code(ws) == CloseCode.UNSUPPORTED_DATA


async def test_oversized_frame_closes_1009(harness: Harness) -> None:
    async with raw(harness.url) as ws:
        await ws.send_message(b"\x00" * (limits.MAX_FRAME_BYTES + 1))
        assert await close_code(ws) == CloseCode.MESSAGE_TOO_BIG


async def test_too_many_bad_frames_in_a_row_close_4006(harness: Harness) -> None:
    alice = await harness.new_user()
    assert alice.access_token
    async with raw(harness.url) as ws:
        await authed(harness.url, alice.access_token, ws)
        for _ in range(30):
            try:
                await ws.send_message(b"\xc1")
            except ConnectionClosed:
                break
        assert await close_code(ws) == CloseCode.TOO_MANY_ERRORS


async def test_spoofed_sender_field_is_ignored(harness: Harness) -> None:
    alice, bob = await harness.new_user(), await harness.new_user()
    assert alice.access_token and alice.user_id and bob.user_id
    conv = direct_conversation_id(alice.user_id, bob.user_id)
    async with raw(harness.url) as ws:
        await authed(harness.url, alice.access_token, ws)
        await ws.send_message(
            enc(
                {
                    "op": "msg.send",
                    "rid": 2,
                    "conv": conv,
                    "cmid": "s1",
                    "sender": bob.user_id,
                    "content": {"text": "from bob?"},
                }
            )
        )
        assert (await reply(ws))["op"] in ("ok", "ev.message")
    async with RivetClient.connect(harness.url, bob) as b:
        history = await b.request(rq.MsgHistory(rid=0, conv=conv))
        assert [m.sender for m in history.messages] == [alice.user_id]


async def test_foreign_conversation_is_indistinguishable_from_a_missing_one(
    harness: Harness,
) -> None:
    alice, bob, eve = [await harness.new_user() for _ in range(3)]
    async with RivetClient.connect(harness.url, alice) as a:
        group = await a.request(rq.GroupCreate(rid=0, cmid="g", title="t", members=[bob.user_id]))
        await a.send(group.conv.conv, "secret")
    async with RivetClient.connect(harness.url, eve) as e:
        errors = []
        for conv in (group.conv.conv, "g:999999"):
            for request in (
                rq.MsgHistory(rid=0, conv=conv),
                rq.MsgSend(rid=0, conv=conv, cmid="x", content=rq.Content(text="hi")),
                rq.Read(rid=0, conv=conv, seq=1),
                rq.GroupInfo(rid=0, conv=conv),
                rq.MsgRecall(rid=0, conv=conv, seq=1),
            ):
                with pytest.raises(RivetError) as caught:
                    await e.request(request)
                errors.append((type(request).__name__, caught.value.code, caught.value.message))
        half = len(errors) // 2
        assert errors[:half] == errors[half:]
        assert {code for _, code, _ in errors} == {ErrorCode.NOT_FOUND}


async def test_handshake_deadline_closes_4001(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = make_config(tmp_path, handshake_deadline=0.3)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    async with raw(running.url) as ws:
        await ws.send_message(enc({"op": "hello", "rid": 1, "version": 1}))
        assert (await reply(ws))["op"] == "ok"
        assert await close_code(ws) == CloseCode.HANDSHAKE_TIMEOUT
    running.shutdown()
