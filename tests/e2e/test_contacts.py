"""Contacts (M5) over the real WebSocket: add by phone number, user id or QR token; accept;
decline; remove; block. Contact events reach both users (live, and by sync when offline)."""

from __future__ import annotations

from client import ClientState, RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import ContactEvent, MessageEvent
from protocol.ids import direct_conversation_id
from tests.e2e.conftest import Harness
from tests.e2e.rig import new_phone, next_of, refused, uid


async def user(harness: Harness, name: str) -> tuple[str, ClientState]:
    """A user with a phone number we know, through the real one-time-code login."""
    phone = new_phone("+1666")
    await RivetClient.request_code(harness.url, phone=phone)
    code = harness.notifier.last_code(phone)
    assert code is not None
    return phone, await RivetClient.login(harness.url, phone=phone, code=code, display_name=name)


async def next_contact(client: RivetClient) -> ContactEvent:
    return await next_of(client, ContactEvent)


async def states(client: RivetClient) -> dict[int, str]:
    listed: replies.Contacts = await client.request(rq.ContactsList(rid=0))
    return {c.user_id: c.state for c in listed.contacts}


async def test_m5_add_by_phone_then_accept_reaches_both_users(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    bob_phone, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        added: replies.Contact = await a.request(
            rq.ContactsAdd(rid=0, cmid="c1", phone=bob_phone, note="it's alice")
        )
        assert added.contact.user_id == uid(bob) and added.contact.state == "requested"
        assert added.contact.display_name == "bob"

        mine = await next_contact(a)
        assert (mine.user_id, mine.state, mine.note) == (uid(bob), "requested", "it's alice")
        theirs = await next_contact(b)
        assert (theirs.user_id, theirs.state, theirs.note) == (uid(alice), "pending", "it's alice")
        assert await states(b) == {uid(alice): "pending"}

        accepted: replies.Contact = await b.request(
            rq.ContactsRespond(rid=0, user=uid(alice), accept=True)
        )
        assert accepted.contact.state == "accepted"
        assert (await next_contact(a)).state == "accepted"
        assert (await next_contact(b)).state == "accepted"
        assert await states(a) == {uid(bob): "accepted"}
        assert await states(b) == {uid(alice): "accepted"}
        # Adding an accepted contact again changes nothing.
        again: replies.Contact = await a.request(rq.ContactsAdd(rid=0, cmid="c2", user_id=uid(bob)))
        assert again.contact.state == "accepted"


async def test_m5_add_by_user_id_then_decline(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.request(rq.ContactsAdd(rid=0, cmid="c1", user_id=uid(bob)))
        assert (await next_contact(b)).state == "pending"
        declined: replies.Contact = await b.request(
            rq.ContactsRespond(rid=0, user=uid(alice), accept=False)
        )
        assert declined.contact.state == "none"
        event = await next_of(a, ContactEvent, lambda e: e.state != "requested")
        assert (event.user_id, event.state) == (uid(bob), "declined")
        assert (await next_contact(b)).state == "none"
        assert await states(a) == {uid(bob): "declined"}
        assert await states(b) == {}
        # There is no request left to answer.
        respond = rq.ContactsRespond(rid=0, user=uid(alice), accept=True)
        assert await refused(b, respond) == ErrorCode.INVALID_STATE


async def test_m5_add_by_qr_token(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        qr: replies.QrToken = await b.request(rq.ContactsQr(rid=0))
        assert qr.token and qr.expires_at > 0
        added: replies.Contact = await a.request(
            rq.ContactsAdd(rid=0, cmid="qr", qr_token=qr.token)
        )
        assert (added.contact.user_id, added.contact.state) == (uid(bob), "requested")
        event = await next_contact(b)
        assert (event.user_id, event.state) == (uid(alice), "pending")
        bogus = rq.ContactsAdd(rid=0, cmid="qr2", qr_token=qr.token + "x")
        assert await refused(a, bogus) == ErrorCode.NOT_FOUND


async def test_m5_add_refusals(harness: Harness) -> None:
    alice_phone, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with RivetClient.connect(harness.url, alice) as a:
        neither = rq.ContactsAdd(rid=0, cmid="n")
        assert await refused(a, neither) == ErrorCode.INVALID_FIELD
        both = rq.ContactsAdd(rid=0, cmid="b", user_id=uid(bob), phone="+19990000000")
        assert await refused(a, both) == ErrorCode.INVALID_FIELD
        nobody = rq.ContactsAdd(rid=0, cmid="x", phone="+19990000000")
        assert await refused(a, nobody) == ErrorCode.NOT_FOUND
        ghost = rq.ContactsAdd(rid=0, cmid="g", user_id=424_242)
        assert await refused(a, ghost) == ErrorCode.NOT_FOUND
        myself = rq.ContactsAdd(rid=0, cmid="s", phone=alice_phone)
        assert await refused(a, myself) == ErrorCode.INVALID_STATE
        assert await states(a) == {}


async def test_m5_adding_back_a_pending_request_accepts_it(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.request(rq.ContactsAdd(rid=0, cmid="a", user_id=uid(bob)))
        back: replies.Contact = await b.request(rq.ContactsAdd(rid=0, cmid="b", user_id=uid(alice)))
        assert back.contact.state == "accepted"
        assert (await next_of(a, ContactEvent, lambda e: e.state == "accepted")).user_id == uid(bob)
        assert await states(a) == {uid(bob): "accepted"}
        assert await states(b) == {uid(alice): "accepted"}


async def test_m5_remove_contact_clears_both_sides(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.request(rq.ContactsAdd(rid=0, cmid="c1", user_id=uid(bob)))
        await b.request(rq.ContactsRespond(rid=0, user=uid(alice), accept=True))
        await next_of(b, ContactEvent, lambda e: e.state == "accepted")
        removed: replies.Contact = await a.request(rq.ContactsRemove(rid=0, user=uid(bob)))
        assert removed.contact.state == "none"
        event = await next_of(b, ContactEvent, lambda e: e.state == "none")
        assert event.user_id == uid(alice)
        assert (await next_of(a, ContactEvent, lambda e: e.state == "none")).user_id == uid(bob)
        assert await states(a) == {} and await states(b) == {}
        assert await refused(a, rq.ContactsRemove(rid=0, user=uid(bob))) == (
            ErrorCode.INVALID_STATE
        )


async def test_m5_block_refuses_direct_messages_and_contact_requests(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    bob_phone, bob = await user(harness, "bob")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.send(conv, "hello before the block")
        await next_of(b, MessageEvent, lambda e: e.conv == conv)
        blocked: replies.Contact = await b.request(
            rq.ContactsBlock(rid=0, user=uid(alice), blocked=True)
        )
        assert blocked.contact.state == "blocked"
        assert (await next_contact(b)).state == "blocked"

        send = rq.MsgSend(rid=0, conv=conv, cmid="m2", content=rq.Content(text="let me in"))
        assert await refused(a, send) == ErrorCode.BLOCKED
        for request in (
            rq.ContactsAdd(rid=0, cmid="c1", phone=bob_phone),
            rq.ContactsAdd(rid=0, cmid="c2", user_id=uid(bob)),
        ):
            assert await refused(a, request) == ErrorCode.BLOCKED
        qr: replies.QrToken = await b.request(rq.ContactsQr(rid=0))
        by_qr = rq.ContactsAdd(rid=0, cmid="c3", qr_token=qr.token)
        assert await refused(a, by_qr) == ErrorCode.BLOCKED
        # The blocker can still write; nothing of the refused attempts was stored.
        await b.send(conv, "I can still talk")
        page: replies.History = await b.request(rq.MsgHistory(rid=0, conv=conv))
        assert [m.content.text for m in page.messages if m.content] == [
            "hello before the block",
            "I can still talk",
        ]
        assert await states(b) == {uid(alice): "blocked"}
        assert await states(a) == {}
        # M5: the blocker's own request does not lift the block behind their back.
        add_back = rq.ContactsAdd(rid=0, cmid="c5", user_id=uid(alice))
        assert await refused(b, add_back) == ErrorCode.INVALID_STATE
        assert await states(b) == {uid(alice): "blocked"}
        assert await states(a) == {}

        await b.request(rq.ContactsBlock(rid=0, user=uid(alice), blocked=False))
        assert (await a.send(conv, "thanks")).seq == 3
        await a.request(rq.ContactsAdd(rid=0, cmid="c4", user_id=uid(bob)))
        event = await next_of(b, ContactEvent, lambda e: e.state == "pending")
        assert event.user_id == uid(alice)


async def test_m5_a_request_withdrawn_by_a_block_cannot_be_accepted(harness: Harness) -> None:
    """M5, found by the router fuzz test: Bob's ``pending`` row outlives Alice's request
    when she blocks him (a block changes only the blocker's row). Answering it overwrote
    her block: accepting made them contacts, declining lifted the block. Now accepting is
    refused and declining clears only Bob's row; after an unblock the request stays
    withdrawn, and Bob adding Alice makes a fresh request."""
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        await a.request(rq.ContactsAdd(rid=0, cmid="c1", user_id=uid(bob)))
        await a.request(rq.ContactsBlock(rid=0, user=uid(bob), blocked=True))
        assert await states(b) == {uid(alice): "pending"}
        accept = rq.ContactsRespond(rid=0, user=uid(alice), accept=True)
        assert await refused(b, accept) == ErrorCode.BLOCKED
        assert await states(a) == {uid(bob): "blocked"}
        declined: replies.Contact = await b.request(
            rq.ContactsRespond(rid=0, user=uid(alice), accept=False)
        )
        assert declined.contact.state == "none"
        assert await states(a) == {uid(bob): "blocked"}  # the block stands
        assert await states(b) == {}

        # Request, block, unblock: the request was withdrawn; accepting it is refused.
        await a.request(rq.ContactsBlock(rid=0, user=uid(bob), blocked=False))
        await a.request(rq.ContactsAdd(rid=0, cmid="c2", user_id=uid(bob)))
        await a.request(rq.ContactsBlock(rid=0, user=uid(bob), blocked=True))
        await a.request(rq.ContactsBlock(rid=0, user=uid(bob), blocked=False))
        assert await states(a) == {}
        assert await refused(b, accept) == ErrorCode.INVALID_STATE
        # Adding her back is a fresh request, not an acceptance.
        added: replies.Contact = await b.request(
            rq.ContactsAdd(rid=0, cmid="c3", user_id=uid(alice))
        )
        assert added.contact.state == "requested"
        assert await states(a) == {uid(bob): "pending"}


async def test_m5_contacts_add_is_idempotent_by_cmid(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    _, carol = await user(harness, "carol")
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
    ):
        assert await a.catch_up() == []  # from now on Alice's device syncs from a token
        request = rq.ContactsAdd(rid=0, cmid="same", user_id=uid(bob), note="hi")
        first: replies.Contact = await a.request(request)
        again: replies.Contact = await a.request(request)
        assert first == again
        assert (
            await refused(a, rq.ContactsAdd(rid=0, cmid="same", user_id=uid(carol), note="hi"))
            == ErrorCode.IDEMPOTENCY_CONFLICT
        )
        assert (
            await refused(a, rq.ContactsAdd(rid=0, cmid="same", user_id=uid(bob), note="other"))
            == ErrorCode.IDEMPOTENCY_CONFLICT
        )

        # Bob got exactly one pending event: his next contact event is the block below.
        assert (await next_contact(b)).state == "pending"
        await b.request(rq.ContactsBlock(rid=0, user=uid(carol), blocked=True))
        event = await next_contact(b)
        assert (event.user_id, event.state) == (uid(carol), "blocked")
        # Alice's own stream has one "requested" entry for Bob.
        caught = await a.catch_up()
        assert [e.state for e in caught if isinstance(e, ContactEvent)] == ["requested"]


async def test_m5_contact_events_reach_an_offline_user_by_sync(harness: Harness) -> None:
    _, alice = await user(harness, "alice")
    _, bob = await user(harness, "bob")
    for state in (alice, bob):
        async with RivetClient.connect(harness.url, state) as client:
            assert await client.catch_up() == []
    async with RivetClient.connect(harness.url, alice) as a:
        await a.request(rq.ContactsAdd(rid=0, cmid="c1", user_id=uid(bob), note="offline"))
    async with RivetClient.connect(harness.url, bob) as b:
        caught = await b.catch_up()
        assert [(e.user_id, e.state, e.note) for e in caught if isinstance(e, ContactEvent)] == [
            (uid(alice), "pending", "offline")
        ]
        await b.request(rq.ContactsRespond(rid=0, user=uid(alice), accept=True))
    async with RivetClient.connect(harness.url, alice) as a:
        caught = await a.catch_up()
        assert [e.state for e in caught if isinstance(e, ContactEvent)] == [
            "requested",
            "accepted",
        ]
