"""Group chats over the real WebSocket (M1 chats, M2 group capacity).

Covers: idempotent creation by cmid, inviting, removing, leaving, renaming, the
owner/admin/member roles of ``server.policy``, ownership transfer, the member limit, muting
a member and mute-all, membership changes as gap-free system entries in the group's own
sequence, the joining point of new members, and fan-out of one message to 50 online clients.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio

from client import ClientState, RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import MessageEvent
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness
from tests.e2e.rig import harness_fixture, next_of, refused, uid

# --- helpers ----------------------------------------------------------------------------------


async def users(harness: Harness, count: int, prefix: str = "u") -> list[ClientState]:
    """``count`` users logged in through the real code flow, created concurrently."""
    found: dict[int, ClientState] = {}

    async def one(index: int) -> None:
        found[index] = await harness.new_user(f"{prefix}{index}")

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return [found[i] for i in range(count)]


async def create(
    client: RivetClient, members: list[ClientState], *, cmid: str = "g1", **fields: Any
) -> str:
    created: replies.GroupCreated = await client.request(
        rq.GroupCreate(
            rid=0,
            cmid=cmid,
            title=fields.pop("title", "team"),
            members=[uid(m) for m in members],
            **fields,
        )
    )
    return created.conv.conv


async def history(client: RivetClient, conv: str) -> list[MessageEvent]:
    page: replies.History = await client.request(rq.MsgHistory(rid=0, conv=conv, limit=500))
    assert not page.more
    return page.messages


async def roles(client: RivetClient, conv: str) -> dict[int, str]:
    page: replies.Members = await client.request(rq.GroupMembers(rid=0, conv=conv))
    return {m.user_id: m.role for m in page.members}


# --- creation -------------------------------------------------------------------------------


async def test_m1_group_create_is_idempotent_by_cmid(harness: Harness) -> None:
    alice, bob, carol = await users(harness, 3)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        request = rq.GroupCreate(
            rid=0, cmid="create-1", title="team", members=[uid(bob), uid(carol)]
        )
        first: replies.GroupCreated = await a.request(request)
        assert not first.duplicate and first.seq == 1
        assert first.conv.owner == uid(alice) and first.conv.member_count == 3
        conv = first.conv.conv

        again: replies.GroupCreated = await a.request(request)
        assert again.duplicate
        assert (again.conv.conv, again.seq, again.stream) == (conv, first.seq, first.stream)

        # The same cmid for different content is a conflict, not a second group.
        other_title = rq.GroupCreate(rid=0, cmid="create-1", title="other", members=[uid(bob)])
        assert await refused(a, other_title) == ErrorCode.IDEMPOTENCY_CONFLICT
        other_members = rq.GroupCreate(rid=0, cmid="create-1", title="team", members=[uid(bob)])
        assert await refused(a, other_members) == ErrorCode.IDEMPOTENCY_CONFLICT

        # Bob saw the group created once: his next group event is the rename below.
        created = await next_of(b, MessageEvent, lambda e: e.conv == conv)
        assert created.seq == 1 and created.system is not None
        assert created.system.action == "created" and created.system.title == "team"
        assert sorted(created.system.users) == sorted([uid(bob), uid(carol)])
        await a.request(rq.GroupRename(rid=0, conv=conv, title="renamed"))
        renamed = await next_of(b, MessageEvent, lambda e: e.conv == conv)
        assert renamed.seq == 2 and renamed.system and renamed.system.action == "renamed"

        assert [m.seq for m in await history(a, conv)] == [1, 2]
        summaries: replies.SyncPage = await b.request(rq.Sync(rid=0))
        assert [s.conv for s in summaries.summaries if s.kind == "group"] == [conv]


async def test_m1_group_add_remove_rename_and_gap_free_system_entries(harness: Harness) -> None:
    """Every membership or settings change is a system entry at the next seq of the group's
    own sequence, interleaved gap-free with messages; members see them live in order."""
    alice, bob, carol, dave = await users(harness, 4)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
        RivetClient.connect(harness.url, carol) as c,
    ):
        conv = await create(a, [bob])
        steps: list[tuple[str, rq.Request]] = [
            ("added", rq.GroupAdd(rid=0, conv=conv, users=[uid(carol)])),
            ("msg", rq.MsgSend(rid=0, conv=conv, cmid="m1", content=rq.Content(text="hi"))),
            ("renamed", rq.GroupRename(rid=0, conv=conv, title="new title")),
            ("role", rq.GroupSetRole(rid=0, conv=conv, user=uid(bob), role="admin")),
            ("member_muted", rq.GroupMuteMember(rid=0, conv=conv, user=uid(carol), muted=True)),
            ("mute_all", rq.GroupMuteAll(rid=0, conv=conv, muted=True)),
            ("history", rq.GroupSetHistory(rid=0, conv=conv, visible=True)),
            ("added", rq.GroupAdd(rid=0, conv=conv, users=[uid(dave)])),
            ("removed", rq.GroupRemove(rid=0, conv=conv, user=uid(carol))),
            ("transferred", rq.GroupTransfer(rid=0, conv=conv, user=uid(bob))),
            ("left", rq.GroupLeave(rid=0, conv=conv)),
        ]
        seqs = []
        for _, request in steps:
            result = await a.request(request)
            seqs.append(result.seq)
        assert seqs == list(range(2, 2 + len(steps)))

        expected = ["created"] + [action for action, _ in steps]
        # Bob (a member throughout) saw every entry live, in order, once.
        live = [await next_of(b, MessageEvent, lambda e: e.conv == conv) for _ in expected]
        assert [e.seq for e in live] == list(range(1, len(expected) + 1))
        assert [e.system.action if e.system else "msg" for e in live] == expected

        entries = await history(b, conv)
        assert [e.seq for e in entries] == list(range(1, len(expected) + 1))
        assert [e.system.action if e.system else "msg" for e in entries] == expected
        by_action = {e.system.action: e.system for e in entries if e.system}
        assert by_action["renamed"].title == "new title"
        assert by_action["role"].users == [uid(bob)] and by_action["role"].role == "admin"
        assert by_action["member_muted"].users == [uid(carol)] and by_action["member_muted"].flag
        assert by_action["mute_all"].flag is True and by_action["history"].flag is True
        assert by_action["removed"].users == [uid(carol)]
        assert by_action["transferred"].users == [uid(bob)]
        assert by_action["left"].users == [uid(alice)]
        assert all(e.system.actor == uid(alice) for e in entries if e.system)

        # Carol saw from her joining entry up to and including her removal, nothing after.
        joined_seq, removed_seq = seqs[0], seqs[8]
        carol_seen = [await next_of(c, MessageEvent, lambda e: e.conv == conv)]
        while carol_seen[-1].seq < removed_seq:
            carol_seen.append(await next_of(c, MessageEvent, lambda e: e.conv == conv))
        assert [e.seq for e in carol_seen] == list(range(joined_seq, removed_seq + 1))
        # A direct message sent after everything else is Carol's next message: no group
        # entry after her removal reached her.
        barrier = await a.send(direct_conversation_id(uid(alice), uid(carol)), "barrier")
        after = await next_of(c, MessageEvent)
        assert (after.conv, after.seq) == (barrier.conv, barrier.seq)
        carol_history = await history(c, conv)
        assert [e.seq for e in carol_history] == list(range(joined_seq, removed_seq + 1))
        assert (
            await refused(
                c, rq.MsgSend(rid=0, conv=conv, cmid="late", content=rq.Content(text="x"))
            )
            == ErrorCode.NOT_FOUND
        )
        summaries: replies.SyncPage = await c.request(rq.Sync(rid=0))
        (summary,) = [s for s in summaries.summaries if s.conv == conv]
        assert summary.left and summary.last_seq == removed_seq

        info: replies.Conversation = await b.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.title == "new title" and info.conv.owner == uid(bob)
        assert info.conv.member_count == 2 and info.conv.last_seq == len(expected)
        assert await roles(b, conv) == {uid(bob): "owner", uid(dave): "member"}


async def test_m1_invite_errors(harness: Harness) -> None:
    alice, bob, carol = await users(harness, 3)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, carol) as c,
    ):
        conv = await create(a, [bob])
        add_bob = rq.GroupAdd(rid=0, conv=conv, users=[uid(bob)])
        assert await refused(a, add_bob) == ErrorCode.ALREADY_MEMBER
        add_ghost = rq.GroupAdd(rid=0, conv=conv, users=[99_999])
        assert await refused(a, add_ghost) == ErrorCode.NOT_FOUND
        with_ghost = rq.GroupCreate(rid=0, cmid="ghost", title="t", members=[99_999])
        assert await refused(a, with_ghost) == ErrorCode.NOT_FOUND
        # A non-member cannot invite, nor learn that the group exists.
        add_self = rq.GroupAdd(rid=0, conv=conv, users=[uid(carol)])
        assert await refused(c, add_self) == ErrorCode.NOT_FOUND
        assert await refused(c, rq.GroupInfo(rid=0, conv=conv)) == ErrorCode.NOT_FOUND
        assert await refused(c, rq.GroupInfo(rid=0, conv="g:424242")) == ErrorCode.NOT_FOUND
        assert await refused(c, rq.MsgHistory(rid=0, conv=conv)) == ErrorCode.NOT_FOUND
        assert await refused(a, rq.GroupRemove(rid=0, conv=conv, user=uid(carol))) == (
            ErrorCode.NOT_MEMBER
        )


# --- roles ----------------------------------------------------------------------------------


async def test_m1_roles_member_admin_owner_may_do_what_policy_says(harness: Harness) -> None:
    owner, admin, member, other, newcomer, admin2 = await users(harness, 6)
    async with (
        RivetClient.connect(harness.url, owner) as o,
        RivetClient.connect(harness.url, admin) as ad,
        RivetClient.connect(harness.url, member) as m,
    ):
        conv = await create(o, [admin, member, other, admin2])
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin), role="admin"))
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin2), role="admin"))

        # Members may invite; nothing else that manages the group.
        await m.request(rq.GroupAdd(rid=0, conv=conv, users=[uid(newcomer)]))
        forbidden_for_member: list[rq.Request] = [
            rq.GroupRemove(rid=0, conv=conv, user=uid(other)),
            rq.GroupRename(rid=0, conv=conv, title="mine"),
            rq.GroupSetRole(rid=0, conv=conv, user=uid(other), role="admin"),
            rq.GroupTransfer(rid=0, conv=conv, user=uid(member)),
            rq.GroupMuteMember(rid=0, conv=conv, user=uid(other), muted=True),
            rq.GroupMuteAll(rid=0, conv=conv, muted=True),
            rq.GroupSetHistory(rid=0, conv=conv, visible=True),
        ]
        for request in forbidden_for_member:
            assert await refused(m, request) == ErrorCode.FORBIDDEN, request
        mention_all = rq.MsgSend(
            rid=0, conv=conv, cmid="all", content=rq.Content(text="hey", mention_all=True)
        )
        assert await refused(m, mention_all) == ErrorCode.FORBIDDEN

        # Admins manage ordinary members and the group's settings...
        await ad.request(rq.GroupRename(rid=0, conv=conv, title="by admin"))
        await ad.request(rq.GroupMuteMember(rid=0, conv=conv, user=uid(member), muted=True))
        await ad.request(rq.GroupMuteMember(rid=0, conv=conv, user=uid(member), muted=False))
        await ad.request(rq.GroupMuteAll(rid=0, conv=conv, muted=True))
        await ad.request(rq.GroupMuteAll(rid=0, conv=conv, muted=False))
        await ad.request(rq.GroupSetHistory(rid=0, conv=conv, visible=True))
        await ad.request(rq.GroupRemove(rid=0, conv=conv, user=uid(newcomer)))
        await ad.send(conv, "everyone", mention_all=True)
        # ...but not roles or ownership, and not members of equal or higher rank.
        forbidden_for_admin: list[rq.Request] = [
            rq.GroupSetRole(rid=0, conv=conv, user=uid(member), role="admin"),
            rq.GroupTransfer(rid=0, conv=conv, user=uid(admin)),
            rq.GroupRemove(rid=0, conv=conv, user=uid(admin2)),
            rq.GroupRemove(rid=0, conv=conv, user=uid(owner)),
            rq.GroupMuteMember(rid=0, conv=conv, user=uid(admin2), muted=True),
            rq.GroupMuteMember(rid=0, conv=conv, user=uid(owner), muted=True),
        ]
        for request in forbidden_for_admin:
            assert await refused(ad, request) == ErrorCode.FORBIDDEN, request

        # The owner sets roles and may act on admins.
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin2), role="member"))
        await o.request(rq.GroupRemove(rid=0, conv=conv, user=uid(admin)))
        assert await roles(o, conv) == {
            uid(owner): "owner",
            uid(member): "member",
            uid(other): "member",
            uid(admin2): "member",
        }
        # A removed admin has lost every power.
        rename = rq.GroupRename(rid=0, conv=conv, title="gone")
        assert await refused(ad, rename) == ErrorCode.NOT_FOUND


async def test_m1_owner_cannot_leave_before_transfer(harness: Harness) -> None:
    alice, bob, carol, dave = await users(harness, 4)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        conv = await create(a, [bob, carol])
        assert await refused(a, rq.GroupLeave(rid=0, conv=conv)) == ErrorCode.INVALID_STATE
        assert await refused(a, rq.GroupTransfer(rid=0, conv=conv, user=uid(dave))) == (
            ErrorCode.NOT_MEMBER
        )
        assert await refused(a, rq.GroupTransfer(rid=0, conv=conv, user=uid(alice))) == (
            ErrorCode.INVALID_STATE
        )
        await a.request(rq.GroupTransfer(rid=0, conv=conv, user=uid(bob)))
        assert await roles(b, conv) == {
            uid(alice): "admin",
            uid(bob): "owner",
            uid(carol): "member",
        }
        info: replies.Conversation = await b.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.owner == uid(bob)
        # The old owner is now an admin: no more ownership powers.
        assert await refused(a, rq.GroupTransfer(rid=0, conv=conv, user=uid(carol))) == (
            ErrorCode.FORBIDDEN
        )
        left: replies.Changed = await a.request(rq.GroupLeave(rid=0, conv=conv))
        event = await next_of(b, MessageEvent, lambda e: e.conv == conv and e.seq == left.seq)
        assert event.system and event.system.action == "left"
        assert event.system.users == [uid(alice)]
        assert await refused(b, rq.GroupLeave(rid=0, conv=conv)) == ErrorCode.INVALID_STATE
        # Alice left: she keeps what she saw, and can no longer write.
        assert [e.seq for e in await history(a, conv)][-1] == left.seq
        assert (
            await refused(a, rq.MsgSend(rid=0, conv=conv, cmid="x", content=rq.Content(text="x")))
            == ErrorCode.NOT_FOUND
        )
        assert await refused(a, rq.GroupLeave(rid=0, conv=conv)) == ErrorCode.NOT_FOUND
        info = await b.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.member_count == 2


# --- member limit (M2) ------------------------------------------------------------------------


# The real server with a group member limit of 3.
small_groups = harness_fixture(group_member_limit=3)


async def test_m2_group_member_limit(small_groups: Harness) -> None:
    alice, bob, carol, dave = await users(small_groups, 4)
    async with RivetClient.connect(small_groups.url, alice) as a:
        assert a.session is not None and a.session.limits.group_member_limit == 3
        too_many = rq.GroupCreate(
            rid=0, cmid="big", title="big", members=[uid(bob), uid(carol), uid(dave)]
        )
        assert await refused(a, too_many) == ErrorCode.MEMBER_LIMIT
        conv = await create(a, [bob, carol], cmid="small")
        info: replies.Conversation = await a.request(rq.GroupInfo(rid=0, conv=conv))
        assert (info.conv.member_count, info.conv.member_limit) == (3, 3)
        add_dave = rq.GroupAdd(rid=0, conv=conv, users=[uid(dave)])
        assert await refused(a, add_dave) == ErrorCode.MEMBER_LIMIT
        # A refused add leaves no trace in the sequence.
        assert [e.seq for e in await history(a, conv)] == [1]
        await a.request(rq.GroupRemove(rid=0, conv=conv, user=uid(carol)))
        await a.request(add_dave)
        info = await a.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.member_count == 3
        assert await refused(a, rq.GroupAdd(rid=0, conv=conv, users=[uid(carol)])) == (
            ErrorCode.MEMBER_LIMIT
        )


# --- muting ---------------------------------------------------------------------------------


async def test_m1_mute_member_and_mute_all_exempt_owner_and_admins(harness: Harness) -> None:
    owner, admin, member, other = await users(harness, 4)
    async with (
        RivetClient.connect(harness.url, owner) as o,
        RivetClient.connect(harness.url, admin) as ad,
        RivetClient.connect(harness.url, member) as m,
        RivetClient.connect(harness.url, other) as x,
    ):
        conv = await create(o, [admin, member, other])
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin), role="admin"))

        await ad.request(rq.GroupMuteMember(rid=0, conv=conv, user=uid(member), muted=True))
        muted = await refused(
            m, rq.MsgSend(rid=0, conv=conv, cmid="m1", content=rq.Content(text="hi"))
        )
        assert muted == ErrorCode.MUTED
        await x.send(conv, "others still talk")
        members: replies.Members = await o.request(rq.GroupMembers(rid=0, conv=conv))
        assert {i.user_id: i.muted for i in members.members}[uid(member)] is True
        await ad.request(rq.GroupMuteMember(rid=0, conv=conv, user=uid(member), muted=False))
        await m.send(conv, "unmuted")

        await o.request(rq.GroupMuteAll(rid=0, conv=conv, muted=True))
        info: replies.Conversation = await o.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.mute_all
        for client in (m, x):
            code = await refused(
                client, rq.MsgSend(rid=0, conv=conv, cmid="quiet", content=rq.Content(text="?"))
            )
            assert code == ErrorCode.MUTED
        await o.send(conv, "owner may speak")
        await ad.send(conv, "admin may speak")
        await o.request(rq.GroupMuteAll(rid=0, conv=conv, muted=False))
        await x.send(conv, "talking again")

        # Refused sends left no trace: only accepted messages hold seqs.
        texts = [e.content.text for e in await history(o, conv) if e.content]
        assert texts == [
            "others still talk",
            "unmuted",
            "owner may speak",
            "admin may speak",
            "talking again",
        ]


# --- joining point ----------------------------------------------------------------------------


async def test_m1_new_members_see_history_from_their_joining_point(harness: Harness) -> None:
    alice, bob, carol, dave, erin = await users(harness, 5)
    # Carol has synced before she is added, so her catch-up later starts from a token.
    async with RivetClient.connect(harness.url, carol) as c:
        assert await c.catch_up() == []
    async with RivetClient.connect(harness.url, alice) as a:
        conv = await create(a, [bob])
        await a.send(conv, "before carol 1")
        await a.send(conv, "before carol 2")
        added: replies.Changed = await a.request(rq.GroupAdd(rid=0, conv=conv, users=[uid(carol)]))
        assert added.seq == 4
        await a.send(conv, "after carol")

        async with RivetClient.connect(harness.url, carol) as c:
            caught = await c.catch_up()
            seen = [e.seq for e in caught if isinstance(e, MessageEvent) and e.conv == conv]
            assert seen == [4, 5]
            assert [e.seq for e in await history(c, conv)] == [4, 5]
            before = rq.ReceiptMembers(rid=0, conv=conv, seq=2)
            assert await refused(c, before) == ErrorCode.NOT_FOUND
            counts: replies.ReceiptCounts = await c.request(
                rq.ReceiptCounts(rid=0, conv=conv, seqs=[2, 3, 5])
            )
            assert [count.seq for count in counts.counts] == [5]
            members: replies.Members = await c.request(rq.GroupMembers(rid=0, conv=conv))
            assert {i.user_id: i.joined_seq for i in members.members}[uid(carol)] == 4

        # With history visible, members added from then on see everything.
        await a.request(rq.GroupSetHistory(rid=0, conv=conv, visible=True))
        await a.request(rq.GroupAdd(rid=0, conv=conv, users=[uid(dave)]))
        async with RivetClient.connect(harness.url, dave) as d:
            assert [e.seq for e in await history(d, conv)] == list(range(1, 8))

        visible = await create(a, [bob], cmid="visible", history_visible=True)
        await a.send(visible, "old news")
        await a.request(rq.GroupAdd(rid=0, conv=visible, users=[uid(erin)]))
        async with RivetClient.connect(harness.url, erin) as e:
            texts = [m.content.text for m in await history(e, visible) if m.content]
            assert texts == ["old news"]


# --- fan-out --------------------------------------------------------------------------------


async def test_m1_group_of_50_one_message_reaches_every_online_client_exactly_once(
    harness: Harness,
) -> None:
    people = await users(harness, 50)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(RivetClient.connect(harness.url, person))
            for person in people
        ]
        sender = clients[0]
        conv = await create(sender, people[1:], cmid="fifty")
        first = await sender.send(conv, "to all fifty")
        marker = await sender.send(conv, "marker")
        assert (first.seq, marker.seq) == (2, 3)

        async def count_copies(client: RivetClient, copies: dict[int, int]) -> None:
            # Raw frames, before the SDK's de-duplication: every delivery counts.
            with trio.fail_after(5):
                while True:
                    event = await client.conn.next_event()
                    if isinstance(event, MessageEvent) and event.conv == conv:
                        copies[event.seq] = copies.get(event.seq, 0) + 1
                        if event.seq == marker.seq:
                            return

        results: list[dict[int, int]] = [{} for _ in clients]
        async with trio.open_nursery() as nursery:
            for client, copies in zip(clients, results, strict=True):
                nursery.start_soon(count_copies, client, copies)
        assert all(copies == {1: 1, 2: 1, 3: 1} for copies in results), results

        info: replies.Conversation = await sender.request(rq.GroupInfo(rid=0, conv=conv))
        assert info.conv.member_count == 50
        text = [e for e in await history(clients[49], conv) if e.seq == first.seq]
        assert text[0].content and text[0].content.text == "to all fifty"
