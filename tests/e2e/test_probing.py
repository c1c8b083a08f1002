"""Probing: every op that names a conversation answers a conversation the caller is not in
exactly as it answers one that does not exist (same code, same message, same fields), so
existence never leaks. The ops are read from the protocol catalog: a new op with a ``conv``
field is covered without editing this test."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

from client import RivetClient
from protocol import requests as rq
from protocol.catalog import AnyRequest
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness
from tests.e2e.test_malformed import authed, raw, reply
from tests.protocol.request_values import edge_frame, tag_of

CONV_OPS = [
    cls
    for cls in typing.get_args(AnyRequest)
    if "conv" in {f.name for f in msgspec.structs.fields(cls)}
]


def test_the_probe_covers_the_ops_that_name_a_conversation() -> None:
    names = {tag_of(cls) for cls in CONV_OPS}
    assert {"msg.send", "msg.history", "read", "group.info", "report"} <= names


async def _probe(harness: Harness, token: str, frames: list[dict[str, Any]]) -> list[dict]:
    answers = []
    async with raw(harness.url) as ws:
        await authed(harness.url, token, ws)
        for rid, frame in enumerate(frames, start=10):
            await ws.send_message(msgspec.msgpack.encode({**frame, "rid": rid}))
            answer = await reply(ws)
            while answer.get("op") not in ("ok", "error"):  # skip pushed events
                answer = await reply(ws)
            assert answer.get("rid") == rid, answer
            answers.append({k: v for k, v in answer.items() if k != "rid"})
    return answers


@pytest.mark.parametrize("kind", ["group", "direct"])
async def test_a_foreign_conversation_answers_like_a_missing_one(
    harness: Harness, kind: str
) -> None:
    alice, bob, eve = [await harness.new_user() for _ in range(3)]
    assert alice.user_id and bob.user_id and eve.access_token
    async with RivetClient.connect(harness.url, alice) as a:
        if kind == "group":
            created = await a.request(
                rq.GroupCreate(rid=0, cmid="g", title="secret", members=[bob.user_id])
            )
            foreign, missing = created.conv.conv, "g:987654"
        else:
            foreign = direct_conversation_id(alice.user_id, bob.user_id)
            missing = direct_conversation_id(987654, 987655)
        for i in range(3):
            await a.send(foreign, f"secret {i}")
    frames = [edge_frame(cls, high=False) for cls in CONV_OPS]
    on_foreign = await _probe(harness, eve.access_token, [{**f, "conv": foreign} for f in frames])
    on_missing = await _probe(harness, eve.access_token, [{**f, "conv": missing} for f in frames])
    for cls, seen, unseen in zip(CONV_OPS, on_foreign, on_missing, strict=True):
        assert seen == unseen, (tag_of(cls), seen, unseen)
    # And nothing eve sent reached the conversation.
    async with RivetClient.connect(harness.url, alice) as a:
        history = await a.request(rq.MsgHistory(rid=0, conv=foreign))
    assert [m.sender for m in history.messages if m.content] == [alice.user_id] * 3
