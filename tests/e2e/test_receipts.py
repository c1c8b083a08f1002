"""Read positions and receipts over the real WebSocket (M1).

A read moves the reader's position: their other devices get the new unread count, a single
chat's peer gets a read receipt, and a group's senders get coalesced read counts
(``ev.receipts``; the harness flushes every 0.05 s). ``receipts.counts`` and
``receipts.members`` answer for any message.
"""

from __future__ import annotations

import trio

from client import RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.events import ReadEvent, ReceiptsEvent, TypingEvent
from protocol.ids import direct_conversation_id
from tests.e2e.rig import Rig, next_of, rig_fixture, uid

rig = rig_fixture("+1888", receipt_flush_seconds=0.05)


async def test_m1_read_positions_sync_unread_to_other_devices_and_receipt_to_peer(
    rig: Rig,
) -> None:
    _, alice = await rig.new_user("alice")
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    laptop = await rig.new_device(bob_phone, "laptop")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, laptop) as lap:
        assert await lap.catch_up() == []  # the laptop syncs once, then stays offline
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, bob) as b,
        RivetClient.connect(rig.url, tablet) as t,
    ):
        for i in range(5):
            await a.send(conv, f"m{i}")
        done: replies.ReadDone = await b.request(rq.Read(rid=0, conv=conv, seq=3))
        assert (done.conv, done.seq, done.unread) == (conv, 3, 2)

        on_tablet = await next_of(t, ReadEvent)
        assert (on_tablet.conv, on_tablet.user, on_tablet.seq, on_tablet.unread) == (
            conv,
            uid(bob),
            3,
            2,
        )
        # The reading device hears it too (every device of the reader).
        assert (await next_of(b, ReadEvent)).seq == 3
        receipt = await next_of(a, ReadEvent)
        assert (receipt.conv, receipt.user, receipt.seq) == (conv, uid(bob), 3)

        # A read position never moves back, and a stale read sends nothing.
        back: replies.ReadDone = await b.request(rq.Read(rid=0, conv=conv, seq=1))
        assert (back.seq, back.unread) == (3, 2)
        beyond: replies.ReadDone = await b.request(rq.Read(rid=0, conv=conv, seq=99))
        assert (beyond.seq, beyond.unread) == (5, 0)
        assert (await next_of(t, ReadEvent)).seq == 5
        assert (await next_of(a, ReadEvent)).seq == 5

        # One's own messages are never unread and move one's own read position.
        await b.send(conv, "reply")
        await a.send(conv, "again")
        page: replies.SyncPage = await t.request(rq.Sync(rid=0))
        (summary,) = page.summaries
        assert (summary.last_seq, summary.read_seq, summary.unread) == (7, 6, 1)
        alice_page: replies.SyncPage = await a.request(rq.Sync(rid=0))
        (alice_summary,) = alice_page.summaries
        assert (alice_summary.read_seq, alice_summary.unread) == (7, 0)

    # The laptop was offline: sync replays the read positions (without a live unread count)
    # and its summary carries the current count.
    async with RivetClient.connect(rig.url, laptop) as lap:
        first: replies.SyncPage = await lap.request(
            rq.Sync(rid=0, token=laptop.sync_token, summary=True, limit=1)
        )
        assert [s.unread for s in first.summaries] == [1]
        caught = await lap.catch_up()
        reads = [e for e in caught if isinstance(e, ReadEvent) and e.user == uid(bob)]
        assert [(e.seq, e.unread) for e in reads] == [(3, None), (5, None)]


async def test_m1_group_receipt_counts_members_and_coalesced_receipts(rig: Rig) -> None:
    """In a group of 20: counts per message, who has and has not read, paged; the sender
    gets coalesced ``ev.receipts`` for their own messages only; group read positions stay
    private to the reader."""
    people = [state for _, state in [await rig.new_user(f"u{i}") for i in range(20)]]
    sender, bob, *rest = people
    async with (
        RivetClient.connect(rig.url, sender) as s,
        RivetClient.connect(rig.url, bob) as b,
    ):
        created: replies.GroupCreated = await s.request(
            rq.GroupCreate(rid=0, cmid="g", title="twenty", members=[uid(p) for p in people[1:]])
        )
        conv = created.conv.conv
        first = await s.send(conv, "first")
        second = await s.send(conv, "second")
        bobs = await b.send(conv, "bob's own")
        assert (first.seq, second.seq, bobs.seq) == (2, 3, 4)

        # Sending moved Bob's read position to his message (seq 4): he has read 2 and 3.
        up_to_second = rest[:5]
        up_to_first = rest[5:8]
        up_to_bobs = rest[8]
        plan = [(p, 3) for p in up_to_second] + [(p, 2) for p in up_to_first] + [(up_to_bobs, 4)]
        for person, seq in plan:
            async with RivetClient.connect(rig.url, person) as reader:
                done: replies.ReadDone = await reader.request(rq.Read(rid=0, conv=conv, seq=seq))
                assert done.seq == seq

        counts: replies.ReceiptCounts = await s.request(
            rq.ReceiptCounts(rid=0, conv=conv, seqs=[3, 2, 1, 4, 99])
        )
        # 19 members besides its sender see each message; seq 1 is a system entry and seq 99
        # does not exist, so neither has a count.
        assert [(c.seq, c.read, c.unread) for c in counts.counts] == [
            (2, 10, 9),
            (3, 7, 12),
            (4, 1, 18),
        ]

        readers = sorted(uid(p) for p in [*up_to_second, up_to_bobs, bob])
        who: replies.ReceiptMembers = await s.request(
            rq.ReceiptMembers(rid=0, conv=conv, seq=3, read=True)
        )
        assert who.users == readers and who.next_after is None
        not_yet: list[int] = []
        after = 0
        while True:
            page: replies.ReceiptMembers = await s.request(
                rq.ReceiptMembers(rid=0, conv=conv, seq=3, read=False, after_user=after, limit=4)
            )
            assert len(page.users) <= 4
            not_yet.extend(page.users)
            if page.next_after is None:
                break
            after = page.next_after
        everyone_else = sorted(uid(p) for p in people[1:])
        assert not_yet == [u for u in everyone_else if u not in readers]

        # Coalesced counts reach the sender, for the sender's messages only.
        latest: dict[int, int] = {}
        with trio.fail_after(5):
            while latest != {2: 10, 3: 7}:
                event = await next_of(s, ReceiptsEvent)
                assert event.conv == conv
                assert {c.seq for c in event.counts} <= {2, 3}
                latest.update({c.seq: c.read for c in event.counts})
        bob_counts = await next_of(b, ReceiptsEvent)
        assert bob_counts.conv == conv
        assert [(c.seq, c.read) for c in bob_counts.counts] == [(4, 1)]

        # Group read positions are private: the sender got no member's ev.read. A typing
        # event that Bob sends after everything is the sender's next event besides receipts.
        await s.request(rq.PresenceSubscribe(rid=0, conv=conv, users=[uid(bob)]))
        await b.request(rq.Typing(rid=0, conv=conv))
        with trio.fail_after(5):
            while True:
                event = await s.next_event()
                assert not isinstance(event, ReadEvent), event
                if isinstance(event, TypingEvent):
                    break
        # Read positions hold no seq of their own: the sequence has only the four entries.
        history: replies.History = await b.request(rq.MsgHistory(rid=0, conv=conv))
        assert [m.seq for m in history.messages] == [1, 2, 3, 4]
