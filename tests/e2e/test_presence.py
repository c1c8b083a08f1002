"""Presence and typing over the real WebSocket (M1, M5).

Presence goes to accepted contacts and single-chat peers when a user's first connection
opens and their last one closes; group members see it only after ``presence.subscribe``.
Typing goes to the single-chat peer, and in groups only to members showing the typist.

"Nothing arrived" is shown with a barrier: an event published after the one that must not
arrive; the connection's queue is ordered, so the barrier must be the next event.
"""

from __future__ import annotations

import pytest
import trio

from client import ClientState, RivetClient
from client.connection import RivetError
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import PresenceEvent, TypingEvent
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness
from tests.e2e.rig import next_of, uid


async def next_event(client: RivetClient) -> object:
    with trio.fail_after(5):
        return await client.next_event()


async def next_ephemeral(client: RivetClient) -> object:
    """The next presence or typing event; durable events before it are skipped."""
    while True:
        event = await next_event(client)
        if isinstance(event, PresenceEvent | TypingEvent):
            return event


async def wait_connections(harness: Harness, user: ClientState, count: int) -> None:
    """Until the server holds ``count`` connections of ``user`` (a close is asynchronous)."""
    hub = harness.server.ctx.hub
    with trio.fail_after(5):
        while True:
            if hub.connection_count(uid(user)) == count:
                return
            await trio.sleep(0.005)


async def befriend(harness: Harness, one: ClientState, other: ClientState) -> None:
    async with (
        RivetClient.connect(harness.url, one) as a,
        RivetClient.connect(harness.url, other) as b,
    ):
        await a.request(rq.ContactsAdd(rid=0, cmid="friends", user_id=uid(other)))
        await b.request(rq.ContactsRespond(rid=0, user=uid(one), accept=True))
    await wait_connections(harness, one, 0)
    await wait_connections(harness, other, 0)


async def barrier(typist: RivetClient, watcher: RivetClient, conv: str) -> None:
    """``typist`` types in the single chat ``conv``: it must be ``watcher``'s next presence
    or typing event (durable events in between, such as messages, are not the point)."""
    await typist.request(rq.Typing(rid=0, conv=conv))
    while True:
        event = await next_event(watcher)
        if isinstance(event, PresenceEvent | TypingEvent):
            break
    assert isinstance(event, TypingEvent), event
    assert (event.conv, event.user) == (conv, typist.user_id)


async def test_m5_contacts_see_presence_of_first_and_last_connection(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    bob = await harness.new_user("bob")
    await befriend(harness, alice, bob)
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(harness.url, alice) as a:
        async with RivetClient.connect(harness.url, bob) as phone:
            online = await next_event(a)
            if online == PresenceEvent(user=uid(bob), online=False):
                # befriend's own connection of bob may be announced gone just after alice
                # arrived (announcements read the stores first): true, and then stale.
                online = await next_event(a)
            assert online == PresenceEvent(user=uid(bob), online=True)
            async with RivetClient.connect(harness.url, bob) as tablet:
                await barrier(tablet, a, conv)  # a second connection is no news
            await wait_connections(harness, bob, 1)
            await barrier(phone, a, conv)  # nor is closing it while another stays
        offline = await next_event(a)
        assert offline == PresenceEvent(user=uid(bob), online=False)


async def test_m1_single_chat_peers_see_presence(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    carol = await harness.new_user("carol")
    conv = direct_conversation_id(uid(alice), uid(carol))
    async with RivetClient.connect(harness.url, carol) as c:
        await c.send(conv, "we have a chat, not a contact")
    await wait_connections(harness, carol, 0)
    async with RivetClient.connect(harness.url, alice) as a:
        async with RivetClient.connect(harness.url, carol):
            assert await next_of(a, PresenceEvent) == PresenceEvent(user=uid(carol), online=True)
        assert await next_of(a, PresenceEvent) == PresenceEvent(user=uid(carol), online=False)


async def test_m1_group_members_see_presence_only_after_subscribing(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    bob = await harness.new_user("bob")
    dave = await harness.new_user("dave")
    stranger = await harness.new_user("stranger")
    await befriend(harness, alice, bob)
    alice_bob = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        assert await next_event(a) == PresenceEvent(user=uid(bob), online=True)
        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(bob), uid(dave)])
        )
        group = created.conv.conv

        async with RivetClient.connect(harness.url, dave) as d:
            await d.request(rq.Ping(rid=0))  # Dave's online announcement is done
            await barrier(b, a, alice_bob)  # and it did not reach Alice
            # Subscribing shows the current state at once, then changes.
            await a.request(
                rq.PresenceSubscribe(rid=0, conv=group, users=[uid(dave), uid(stranger)])
            )
            assert await next_ephemeral(a) == PresenceEvent(user=uid(dave), online=True)
            await barrier(b, a, alice_bob)  # the stranger (not a member) is ignored
        assert await next_ephemeral(a) == PresenceEvent(user=uid(dave), online=False)
        async with RivetClient.connect(harness.url, dave) as d:
            assert await next_ephemeral(a) == PresenceEvent(user=uid(dave), online=True)
            # An empty list unsubscribes.
            await a.request(rq.PresenceSubscribe(rid=0, conv=group, users=[]))
        await wait_connections(harness, dave, 0)
        await barrier(b, a, alice_bob)

        # Only members of a group the caller is in can be watched.
        async with RivetClient.connect(harness.url, stranger) as s:
            with pytest.raises(RivetError) as refused:
                await s.request(rq.PresenceSubscribe(rid=0, conv=group, users=[uid(alice)]))
            assert refused.value.code == ErrorCode.NOT_FOUND


async def test_m1_typing_reaches_the_single_chat_peer(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    bob = await harness.new_user("bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.send(conv, "hi")
        await a.request(rq.Typing(rid=0, conv=conv))
        typing = await next_of(b, TypingEvent)
        assert (typing.conv, typing.user) == (conv, uid(alice))
        # The typist is not shown their own typing: Bob's reply is Alice's next typing event.
        await b.request(rq.Typing(rid=0, conv=conv))
        back = await next_of(a, TypingEvent)
        assert (back.conv, back.user) == (conv, uid(bob))


async def test_m1_group_typing_goes_only_to_subscribed_members(harness: Harness) -> None:
    alice = await harness.new_user("alice")
    bob = await harness.new_user("bob")
    carol = await harness.new_user("carol")
    outsider = await harness.new_user("outsider")
    alice_bob = direct_conversation_id(uid(alice), uid(bob))
    alice_carol = direct_conversation_id(uid(alice), uid(carol))
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
        RivetClient.connect(harness.url, carol) as c,
        RivetClient.connect(harness.url, outsider) as o,
    ):
        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(bob), uid(carol)])
        )
        group = created.conv.conv
        await b.request(rq.PresenceSubscribe(rid=0, conv=group, users=[uid(alice)]))
        assert await next_of(b, PresenceEvent) == PresenceEvent(user=uid(alice), online=True)

        await a.request(rq.Typing(rid=0, conv=group))
        typing = await next_of(b, TypingEvent)
        assert (typing.conv, typing.user) == (group, uid(alice))
        # Carol did not subscribe: the next typing event she sees is the barrier.
        await a.request(rq.Typing(rid=0, conv=alice_carol))
        seen = await next_of(c, TypingEvent)
        assert (seen.conv, seen.user) == (alice_carol, uid(alice))

        # Once Bob has left the group, his old subscription shows him nothing.
        await b.request(rq.GroupLeave(rid=0, conv=group))
        await a.request(rq.Typing(rid=0, conv=group))
        await a.request(rq.Typing(rid=0, conv=alice_bob))
        after = await next_of(b, TypingEvent)
        assert (after.conv, after.user) == (alice_bob, uid(alice))

        with pytest.raises(RivetError) as refused:
            await o.request(rq.Typing(rid=0, conv=group))
        assert refused.value.code == ErrorCode.NOT_FOUND
