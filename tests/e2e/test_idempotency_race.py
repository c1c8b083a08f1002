"""The same client message id on two connections at once: one message is stored and both
connections get the same ack (on every store backend)."""

from __future__ import annotations

import trio

from client import ClientState, RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness


def _device_copy(state: ClientState) -> ClientState:
    return ClientState(
        access_token=state.access_token,
        refresh_token=state.refresh_token,
        user_id=state.user_id,
        device_id=state.device_id,
    )


async def _send(client: RivetClient, request: rq.MsgSend, into: list[replies.Sent]) -> None:
    into.append(await client.request(request))


async def test_same_cmid_on_two_connections_at_once_is_stored_once(harness: Harness) -> None:
    alice, bob = await harness.new_user(), await harness.new_user()
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    acks: dict[str, list[replies.Sent]] = {}
    async with (
        RivetClient.connect(harness.url, alice) as one,
        RivetClient.connect(harness.url, _device_copy(alice)) as two,
    ):
        for round_ in range(15):
            cmid = f"race-{round_}"
            request = rq.MsgSend(rid=0, conv=conv, cmid=cmid, content=rq.Content(text=cmid))
            acks[cmid] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send, one, request, acks[cmid])
                nursery.start_soon(_send, two, request, acks[cmid])
    for cmid, (first, second) in acks.items():
        same = (first.conv, first.seq, first.msg_id, first.stream, first.ts)
        assert same == (second.conv, second.seq, second.msg_id, second.stream, second.ts), cmid
        assert sorted([first.duplicate, second.duplicate]) == [False, True], cmid
    async with RivetClient.connect(harness.url, bob) as b:
        history = await b.request(rq.MsgHistory(rid=0, conv=conv, limit=100))
    texts = [m.content.text for m in history.messages if m.content]
    assert texts == [f"race-{i}" for i in range(15)]  # each once, in order
    assert [m.seq for m in history.messages] == list(range(1, 16))
