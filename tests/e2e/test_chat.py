"""Two users chat over a real WebSocket (M1)."""

from __future__ import annotations

import trio

from client import RivetClient
from protocol import requests as rq
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness


async def test_m1_two_users_chat_and_each_device_receives_in_order(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    bob = await harness.new_user("bob")
    assert alice.user_id and bob.user_id
    conv = direct_conversation_id(alice.user_id, bob.user_id)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        acks = [await a.send(conv, f"hello {i}") for i in range(5)]
        assert [ack.seq for ack in acks] == [1, 2, 3, 4, 5]
        with trio.fail_after(5):
            got = [await b.next_message(conv=conv) for _ in range(5)]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        assert [m.content.text for m in got if m.content] == [f"hello {i}" for i in range(5)]
        assert all(m.sender == alice.user_id for m in got)
        reply = await b.send(conv, "hi alice")
        assert reply.seq == 6
        with trio.fail_after(5):
            back = await a.next_message(conv=conv)
        assert back.seq == 6 and back.sender == bob.user_id


async def test_m1_chat_with_oneself(harness: Harness) -> None:
    alice = await harness.new_user()
    assert alice.user_id
    conv = f"s:{alice.user_id}"
    async with RivetClient.connect(harness.url, alice) as a:
        ack = await a.send(conv, "note to self")
        assert ack.seq == 1
        history = await a.request(rq.MsgHistory(rid=0, conv=conv))
        assert [m.content.text for m in history.messages] == ["note to self"]
