"""Recall (M4) over the real WebSocket: the sender within the 24-hour window, a group's
owner and admins at any time; the content is erased (the seq stays, ``recalled`` true);
every device of every member is told once; recalling again changes nothing."""

from __future__ import annotations

import trio

from client import RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import MessageEvent, RecallEvent
from protocol.ids import direct_conversation_id
from tests.e2e.rig import Rig, next_of, refused, rig_fixture, uid

HOUR = 3600.0

rig = rig_fixture("+1999", receipt_flush_seconds=0.05)


async def history(client: RivetClient, conv: str) -> dict[int, MessageEvent]:
    page: replies.History = await client.request(rq.MsgHistory(rid=0, conv=conv, limit=500))
    return {m.seq: m for m in page.messages}


async def raw_until_message(client: RivetClient, seq: int) -> list[object]:
    """Every raw frame-level event up to the ``ev.message`` at ``seq`` (no SDK dedup)."""
    seen: list[object] = []
    with trio.fail_after(5):
        while True:
            event = await client.conn.next_event()
            seen.append(event)
            if isinstance(event, MessageEvent) and event.seq == seq:
                return seen


async def test_m4_sender_recalls_within_window_content_erased_every_device_told(
    rig: Rig,
) -> None:
    alice_phone, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    tablet = await rig.new_device(alice_phone, "tablet")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, bob) as b:
        assert await b.catch_up() == []  # Bob's device goes offline with a sync token
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, tablet) as t,
    ):
        secret = await a.send(conv, "secret", mentions=[uid(bob)])
        await a.send(conv, "keep")
        rig.clock.advance(23 * HOUR)  # still inside the 24-hour window
        recalled: replies.Recalled = await a.request(rq.MsgRecall(rid=0, conv=conv, seq=1))
        assert (recalled.conv, recalled.seq) == (conv, secret.seq)
        for client in (a, t):
            event = await next_of(client, RecallEvent)
            assert (event.conv, event.seq, event.by) == (conv, 1, uid(alice))
            assert event.stream == recalled.stream

        # Idempotent: the same answer, and no second event.
        again: replies.Recalled = await a.request(rq.MsgRecall(rid=0, conv=conv, seq=1))
        assert again == recalled
        marker = await a.send(conv, "after")
        frames = await raw_until_message(t, marker.seq)
        assert not any(isinstance(e, RecallEvent) for e in frames), frames

        entries = await history(a, conv)
        assert entries[1].recalled and entries[1].content is None
        assert entries[2].content and entries[2].content.text == "keep"

    # Bob was offline: he catches up on a tombstone, never the content.
    async with RivetClient.connect(rig.url, bob) as b:
        caught = await b.catch_up()
        messages = {e.seq: e for e in caught if isinstance(e, MessageEvent)}
        assert sorted(messages) == [1, 2, 3]
        assert messages[1].recalled and messages[1].content is None
        recalls = [e for e in caught if isinstance(e, RecallEvent)]
        assert [(e.seq, e.by) for e in recalls] == [(1, uid(alice))]
        assert (await history(b, conv))[1].content is None
        page: replies.SyncPage = await b.request(rq.Sync(rid=0))
        assert [s.unread for s in page.summaries] == [2]  # the recalled one is not unread


async def test_m4_other_members_cannot_recall(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    _, carol = await rig.new_user("carol")
    _, outsider = await rig.new_user("outsider")
    direct = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, bob) as b,
        RivetClient.connect(rig.url, carol) as c,
        RivetClient.connect(rig.url, outsider) as o,
    ):
        await a.send(direct, "mine")
        assert await refused(b, rq.MsgRecall(rid=0, conv=direct, seq=1)) == ErrorCode.FORBIDDEN
        assert await refused(o, rq.MsgRecall(rid=0, conv=direct, seq=1)) == ErrorCode.NOT_FOUND
        assert await refused(a, rq.MsgRecall(rid=0, conv=direct, seq=7)) == ErrorCode.NOT_FOUND

        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(bob), uid(carol)])
        )
        group = created.conv.conv
        sent = await b.send(group, "bob's")
        assert await refused(c, rq.MsgRecall(rid=0, conv=group, seq=sent.seq)) == (
            ErrorCode.FORBIDDEN
        )
        # A system entry is not a message anyone can recall.
        assert await refused(a, rq.MsgRecall(rid=0, conv=group, seq=1)) == ErrorCode.NOT_FOUND
        assert not (await history(a, direct))[1].recalled
        assert not (await history(a, group))[sent.seq].recalled


async def test_m4_group_admin_recalls_any_member_message_at_any_time(rig: Rig) -> None:
    _, owner = await rig.new_user("owner")
    _, admin = await rig.new_user("admin")
    _, carol = await rig.new_user("carol")
    _, dave = await rig.new_user("dave")
    async with (
        RivetClient.connect(rig.url, owner) as o,
        RivetClient.connect(rig.url, admin) as ad,
        RivetClient.connect(rig.url, carol) as c,
        RivetClient.connect(rig.url, dave) as d,
    ):
        created: replies.GroupCreated = await o.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(admin), uid(carol), uid(dave)])
        )
        group = created.conv.conv
        await o.request(rq.GroupSetRole(rid=0, conv=group, user=uid(admin), role="admin"))
        carols = await c.send(group, "carol's")
        daves = await d.send(group, "dave's")

        await ad.request(rq.MsgRecall(rid=0, conv=group, seq=carols.seq))
        for client in (o, ad, c, d):
            event = await next_of(client, RecallEvent)
            assert (event.conv, event.seq, event.by) == (group, carols.seq, uid(admin))

        rig.clock.advance(25 * HOUR)
        # The sender's window has passed...
        assert await refused(d, rq.MsgRecall(rid=0, conv=group, seq=daves.seq)) == (
            ErrorCode.RECALL_WINDOW_PASSED
        )
        # ...an admin's has not.
        await ad.request(rq.MsgRecall(rid=0, conv=group, seq=daves.seq))
        assert (await next_of(d, RecallEvent)).seq == daves.seq
        entries = await history(c, group)
        assert entries[carols.seq].recalled and entries[carols.seq].content is None
        assert entries[daves.seq].recalled and entries[daves.seq].content is None
        # Once demoted, an admin is an ordinary member again.
        owners = await o.send(group, "owner's")
        await o.request(rq.GroupSetRole(rid=0, conv=group, user=uid(admin), role="member"))
        assert await refused(ad, rq.MsgRecall(rid=0, conv=group, seq=owners.seq)) == (
            ErrorCode.FORBIDDEN
        )


async def test_m4_sender_cannot_recall_after_the_window(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, alice) as a:
        old = await a.send(conv, "old")
        rig.clock.advance(24 * HOUR + 1)
        assert await refused(a, rq.MsgRecall(rid=0, conv=conv, seq=old.seq)) == (
            ErrorCode.RECALL_WINDOW_PASSED
        )
        fresh = await a.send(conv, "fresh")
        await a.request(rq.MsgRecall(rid=0, conv=conv, seq=fresh.seq))
        entries = await history(a, conv)
        assert not entries[old.seq].recalled and entries[fresh.seq].recalled
