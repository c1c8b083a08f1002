"""Catch-up over the real WebSocket (M1): offline devices, new devices, resends, paging, ack.

A device that was offline sees exactly what an online one saw: every message once, in
per-conversation seq order, gap-free; resending an unacknowledged message stores nothing new.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
import pytest
import trio

from client import RivetClient
from client.connection import RivetError
from protocol import codec, replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import ContactEvent, MessageEvent, ReadEvent, SettingsEvent, SyncEvent
from protocol.ids import direct_conversation_id
from tests.e2e.rig import Rig, next_of, rig_fixture, uid

# The real server, with a send rate high enough for bulk sends and a clock we move.
rig = rig_fixture(
    "+1777",
    receipt_flush_seconds=0.05,
    send_rate_per_second=100_000.0,
    send_burst=100_000,
)


async def raw_message_seqs(client: RivetClient, *, until_seq: int) -> list[int]:
    """Seqs of the ``ev.message`` frames the connection receives, up to ``until_seq``."""
    seqs: list[int] = []
    with trio.fail_after(5):
        while not seqs or seqs[-1] < until_seq:
            event = await client.conn.next_event()
            if isinstance(event, MessageEvent):
                seqs.append(event.seq)
    return seqs


async def history(client: RivetClient, conv: str) -> list[MessageEvent]:
    page: replies.History = await client.request(rq.MsgHistory(rid=0, conv=conv, limit=500))
    return page.messages


async def send_many(client: RivetClient, plan: list[tuple[str, str]]) -> None:
    for conv, text in plan:
        await client.send(conv, text)


async def test_m1_offline_device_catches_up_1000_messages_exactly_once_in_order(
    rig: Rig,
) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    _, carol = await rig.new_user("carol")
    ab = direct_conversation_id(uid(alice), uid(bob))
    cb = direct_conversation_id(uid(carol), uid(bob))
    async with RivetClient.connect(rig.url, alice) as a:
        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="team", members=[uid(bob), uid(carol)])
        )
    group = created.conv.conv
    # Bob's device syncs once (after the group was created), then goes offline.
    async with RivetClient.connect(rig.url, bob) as b:
        assert await b.catch_up() == []

    alice_plan = [(ab if i % 3 else group, f"a{i}") for i in range(600)]
    carol_plan = [(cb if i % 2 else group, f"c{i}") for i in range(400)]
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, carol) as c,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(send_many, a, alice_plan)
        nursery.start_soon(send_many, c, carol_plan)
    expected: dict[str, list[str]] = defaultdict(list)
    for conv, text in alice_plan + carol_plan:
        expected[conv].append(text)
    assert sum(len(v) for v in expected.values()) == 1000

    async with RivetClient.connect(rig.url, bob) as b:
        # The summaries of the changed conversations carry the unread counts.
        first: replies.SyncPage = await b.request(
            rq.Sync(rid=0, token=bob.sync_token, summary=True, limit=1)
        )
        unread = {s.conv: s.unread for s in first.summaries}
        assert unread == {conv: len(texts) for conv, texts in expected.items()}

        caught = await b.catch_up(page=250)
        messages = [e for e in caught if isinstance(e, MessageEvent)]
        assert len(messages) == 1000
        streams = [e.stream for e in caught]
        assert streams == sorted(set(streams)), "stream order, each event once"
        by_conv: dict[str, list[MessageEvent]] = defaultdict(list)
        for event in messages:
            by_conv[event.conv].append(event)
        for conv, events in by_conv.items():
            seqs = [e.seq for e in events]
            start = 2 if conv == group else 1  # seq 1 of the group predates Bob's token
            assert seqs == list(range(start, start + len(expected[conv]))), conv
        # Texts arrive per sender in the order sent (each sender sends one after another).
        for conv, events in by_conv.items():
            for sender in (uid(alice), uid(carol)):
                got = [e.content.text for e in events if e.sender == sender and e.content]
                sent = [t for t in expected[conv] if t[0] == ("a" if sender == uid(alice) else "c")]
                assert got == sent
        # Nothing more to catch up; the history agrees.
        assert await b.catch_up() == []
        assert [e.seq for e in await history(b, cb)] == list(range(1, 201))


async def test_m1_new_device_starts_from_the_summary(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    bob_phone, bob = await rig.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, bob) as b,
    ):
        for i in range(10):
            await a.send(conv, f"m{i}")
        await b.request(rq.Read(rid=0, conv=conv, seq=4))

    tablet = await rig.new_device(bob_phone, "tablet")
    assert tablet.user_id == uid(bob) and tablet.device_id != bob.device_id
    async with (
        RivetClient.connect(rig.url, tablet) as t,
        RivetClient.connect(rig.url, alice) as a,
    ):
        page: replies.SyncPage = await t.request(rq.Sync(rid=0))
        assert page.events == [] and not page.more
        (summary,) = page.summaries
        assert (summary.conv, summary.kind, summary.last_seq) == (conv, "direct", 10)
        assert (summary.read_seq, summary.unread) == (4, 6)
        assert summary.last_message and summary.last_message.content
        assert summary.last_message.content.text == "m9"

        # The new device does not replay what came before: that is history.
        assert await t.catch_up() == []
        assert t.state.sync_token is not None
        assert [m.seq for m in await history(t, conv)] == list(range(1, 11))
        await a.send(conv, "for the new device")
        live = await next_of(t, MessageEvent)
        assert (live.conv, live.seq) == (conv, 11)


async def test_m1_resend_after_reconnect_stores_nothing_new(rig: Rig) -> None:
    """A message whose ack was lost (before or after it arrived) is resent with its cmid
    after reconnecting: the server answers duplicate=true and stores one copy."""
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, bob) as b:
        # Before the ack: the request is on the wire, the connection drops unacknowledged.
        lost = rq.MsgSend(rid=0, conv=conv, cmid="lost-ack", content=rq.Content(text="once"))
        async with RivetClient.connect(rig.url, alice) as a:
            alice.unacked[lost.cmid] = lost
            await a.conn.send_raw(codec.encode_request(msgspec.structs.replace(lost, rid=999)))
            stored = await next_of(b, MessageEvent)  # the server did store it
            assert (stored.conv, stored.seq, stored.cmid) == (conv, 1, "lost-ack")
        async with RivetClient.connect(rig.url, alice) as a:
            (ack,) = await a.resend_unacked()
            assert ack.duplicate and (ack.conv, ack.seq, ack.stream) == (conv, 1, stored.stream)
            assert alice.unacked == {}

            # After the ack: the client resends anyway (e.g. it crashed before saving it).
            sent = await a.send(conv, "twice?", cmid="after-ack")
            assert not sent.duplicate and sent.seq == 2
        async with RivetClient.connect(rig.url, alice) as a:
            again: replies.Sent = await a.request(
                rq.MsgSend(rid=0, conv=conv, cmid="after-ack", content=rq.Content(text="twice?"))
            )
            assert again.duplicate and (again.seq, again.stream) == (sent.seq, sent.stream)
            # catch_up resends what is unacknowledged too.
            alice.unacked["after-ack"] = rq.MsgSend(
                rid=0, conv=conv, cmid="after-ack", content=rq.Content(text="twice?")
            )
            await a.catch_up()
            assert alice.unacked == {}
            texts = [m.content.text for m in await history(a, conv) if m.content]
            assert texts == ["once", "twice?"]
            # Bob's connection got each message once (raw frames, before the SDK's dedup).
            await a.send(conv, "third")
            assert await raw_message_seqs(b, until_seq=3) == [2, 3]
        # The same cmid for other content is refused, never stored.
        async with RivetClient.connect(rig.url, alice) as a:
            with pytest.raises(RivetError) as conflict:
                await a.send(conv, "different", cmid="after-ack")
            assert conflict.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
            assert [m.seq for m in await history(a, conv)] == [1, 2, 3]


async def test_m1_sync_paging_with_small_limits(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, alice) as a:
        assert await a.catch_up() == []
        start = alice.sync_token
    async with RivetClient.connect(rig.url, bob) as b:
        for i in range(7):
            await b.send(conv, f"m{i}")
        await b.request(rq.ContactsAdd(rid=0, cmid="c", user_id=uid(alice)))
    async with RivetClient.connect(rig.url, alice) as a:
        await a.request(rq.Read(rid=0, conv=conv, seq=3))
        await a.request(rq.SettingsSet(rid=0, notifications=False))
        await a.request(rq.ContactsRespond(rid=0, user=uid(bob), accept=True))

        whole: replies.SyncPage = await a.request(rq.Sync(rid=0, token=start, limit=500))
        assert not whole.more

        paged: list[SyncEvent] = []
        token, pages = start, 0
        while True:
            page: replies.SyncPage = await a.request(
                rq.Sync(rid=0, token=token, summary=pages == 0, limit=2)
            )
            assert len(page.events) <= 2
            if pages > 0:
                assert page.summaries == []
            paged.extend(page.events)
            token, pages = page.token, pages + 1
            if not page.more:
                break
            assert pages < 50, "paging does not end"
        assert pages >= 6
        assert paged == whole.events
        assert token == whole.token

        messages = [e.seq for e in paged if isinstance(e, MessageEvent)]
        assert messages == list(range(1, 8))
        assert [e.seq for e in paged if isinstance(e, ReadEvent)] == [3]
        assert [e.state for e in paged if isinstance(e, ContactEvent)] == ["pending", "accepted"]
        assert [e.notifications for e in paged if isinstance(e, SettingsEvent)] == [False]
        # From the last token there is nothing more.
        done: replies.SyncPage = await a.request(rq.Sync(rid=0, token=token, limit=2))
        assert done.events == [] and not done.more


async def test_m1_ack_of_the_sync_token_is_accepted(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    async with RivetClient.connect(rig.url, alice) as a:
        page: replies.SyncPage = await a.request(rq.Sync(rid=0))
        done = await a.request(rq.Ack(rid=0, token=page.token))
        assert isinstance(done, replies.Done)
        await a.send(f"s:{uid(alice)}", "note")
        later: replies.SyncPage = await a.request(rq.Sync(rid=0, token=page.token))
        assert [e.seq for e in later.events if isinstance(e, MessageEvent)] == [1]
        assert isinstance(await a.request(rq.Ack(rid=0, token=later.token)), replies.Done)
        for request in (rq.Ack(rid=0, token="not-a-token"), rq.Sync(rid=0, token="1.x.2")):
            with pytest.raises(RivetError) as bad:
                await a.request(request)
            assert bad.value.code == ErrorCode.INVALID_FIELD


async def test_m1_reconnecting_while_messages_flow_loses_and_repeats_nothing(rig: Rig) -> None:
    """The hand-over between a sync page and live events has no gap: a device that
    reconnects in the middle of a burst ends with every seq once, in order."""
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, bob) as b:
        assert await b.catch_up() == []
    total = 300
    some_sent = trio.Event()

    async def burst(client: RivetClient) -> None:
        for i in range(total):
            await client.send(conv, f"m{i}")
            if i == 50:
                some_sent.set()

    async with RivetClient.connect(rig.url, alice) as a, trio.open_nursery() as nursery:
        nursery.start_soon(burst, a)
        await some_sent.wait()
        async with RivetClient.connect(rig.url, bob) as b:
            caught = [e.seq for e in await b.catch_up() if isinstance(e, MessageEvent)]
            assert caught, "the catch-up found what was sent before the reconnect"
            live: list[int] = []
            with trio.fail_after(10):
                while (live or caught)[-1] < total:
                    live.append((await b.next_message(conv=conv)).seq)
            assert caught + live == list(range(1, total + 1))
