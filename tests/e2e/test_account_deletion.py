"""A1: personal account deletion over real WebSockets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from client import RivetClient, RivetError
from protocol import account as pa
from protocol import moderation as pm
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.events import ContactEvent, MessageEvent, RecallEvent
from protocol.ids import direct_conversation_id
from tests.e2e.orgs_world import open_world, texts
from tests.e2e.processes import RIVET, create_users
from tests.e2e.test_enterprise import account, verified_org


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a1_deleting_an_account_erases_it_and_tombstones_its_content(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("ann", "bob", "admin"):
            await w.user(name)
        chat = direct_conversation_id(w.uid("ann"), w.uid("bob"))
        group = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="g", title="t", members=[w.uid("ann")])
        )
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "ann")
        await w.consent("ann", org, True)
        await w.say("ann", chat, "ann in the chat")
        await w.say("bob", chat, "bob in the chat")
        await w.say("ann", group.conv.conv, "ann in the group")
        await w.settle()
        # A1 decision: leave the organisation first.
        with pytest.raises(RivetError) as member:
            await w.call("ann", pa.AccountDelete(rid=0))
        assert member.value.code == ErrorCode.INVALID_STATE
        await w.call("ann", po.OrgLeave(rid=0, org=org))
        ann_state = w.users["ann"]
        async with (
            RivetClient.connect(w.url, w.users["bob"]) as bob,
            RivetClient.connect(w.url, ann_state) as ann_other_device,
        ):
            async with RivetClient.connect(w.url, ann_state) as ann:
                await ann.request(pa.AccountDelete(rid=0))
            with trio.fail_after(5):
                await ann_other_device.conn.closed.wait()
            assert ann_other_device.conn.close_code == CloseCode.SESSION_REVOKED
            recalled = set()
            with trio.fail_after(5):
                while len(recalled) < 2:
                    event = await bob.next_event()
                    if isinstance(event, RecallEvent):
                        recalled.add((event.conv, event.seq))
            history = await bob.request(rq.MsgHistory(rid=0, conv=chat))
            # (The erasure also makes ann leave the chat: that entry, if already written,
            # is a system one.)
            assert [
                (m.sender, m.recalled, m.content.text if m.content else None)
                for m in history.messages
                if m.system is None
            ] == [
                (w.uid("ann"), True, None),
                (w.uid("bob"), False, "bob in the chat"),
            ]
        for _ in range(100):
            if not await w.server.ctx.stores.personal.pending_deletions():
                break
            await trio.sleep(0.02)
        personal = w.server.ctx.stores.personal
        assert await personal.pending_deletions() == []
        assert await personal.list_devices(w.uid("ann")) == []
        assert (await personal.get_user(w.uid("ann"))).deleted  # type: ignore[union-attr]
        # Old tokens are refused; the organisation's copy stays with the organisation.
        with pytest.raises(RivetError):
            async with RivetClient.connect(w.url, ann_state):
                pass
        assert await texts(w, "admin", org) == ["ann in the chat", "ann in the group"]


async def test_p6_operator_lists_and_reclaims_only_dormant_accounts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    users = sorted(create_users(data, 2), key=lambda u: u.user_id or 0)
    listed = await trio.run_process(
        [*RIVET, "accounts", "dormant", "--data-dir", str(data), "--months", "0"],
        capture_stdout=True,
    )
    found = [json.loads(line)["user_id"] for line in listed.stdout.decode().splitlines()]
    assert found == [u.user_id for u in users]  # with 0 months everyone is dormant
    none = await trio.run_process(
        [*RIVET, "accounts", "dormant", "--data-dir", str(data)], capture_stdout=True
    )
    assert none.stdout == b""  # nobody is 12 months idle
    refused = await trio.run_process(
        [*RIVET, "accounts", "reclaim", "--data-dir", str(data), "--user", str(users[0].user_id)],
        capture_stderr=True,
        check=False,
    )
    assert refused.returncode == 1 and b"not dormant" in refused.stderr
    done = await trio.run_process(
        [
            *RIVET,
            "accounts",
            "reclaim",
            "--data-dir",
            str(data),
            "--months",
            "0",
            "--user",
            str(users[0].user_id),
        ],
        capture_stdout=True,
    )
    assert json.loads(done.stdout) == {"user_id": users[0].user_id, "reclaimed": True}
    after = await trio.run_process(
        [*RIVET, "accounts", "dormant", "--data-dir", str(data), "--months", "0"],
        capture_stdout=True,
    )
    assert [json.loads(line)["user_id"] for line in after.stdout.decode().splitlines()] == [
        users[1].user_id
    ]


async def test_p6_p5_an_enterprise_account_is_listed_with_its_org_and_never_reclaimed(
    tmp_path: Path,
) -> None:
    async with open_world(tmp_path, "sqlite") as w:
        await w.user("admin")
        org = await verified_org(w, "admin", "Acme")
        bob = await account(w, "admin", org, "bob")
    data = tmp_path / "data"
    listed = await trio.run_process(
        [*RIVET, "accounts", "dormant", "--data-dir", str(data), "--months", "0"],
        capture_stdout=True,
    )
    lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert [line.get("organisation") for line in lines if line["user_id"] == bob] == [org]
    reclaim = ["accounts", "reclaim", "--data-dir", str(data), "--months", "0", "--user", str(bob)]
    refused = await trio.run_process(
        [*RIVET, *reclaim],
        capture_stderr=True,
        check=False,
    )
    assert refused.returncode == 1 and b"belong to their organisation" in refused.stderr


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a1_m5_a_deleted_users_contacts_lose_them_live_and_on_sync(
    tmp_path: Path, store: str
) -> None:
    """The erasure deletes the contact rows on both sides. Each contact's devices must learn
    it: live (an ``ev.contact`` with state ``none``, as after a removal), and from ``sync``
    (the same entry in their personal stream). Before, the rows went silently: a peer's
    devices showed the contact for good, though ``contacts.list`` no longer did."""
    async with open_world(tmp_path, store) as w:
        for name in ("ann", "bob", "cy"):
            await w.user(name)
        await w.call("ann", rq.ContactsAdd(rid=0, cmid="friends", user_id=w.uid("bob")))
        await w.call("bob", rq.ContactsRespond(rid=0, user=w.uid("ann"), accept=True))
        # A block is one-sided: only cy's row names ann (found in review).
        await w.call("cy", rq.ContactsBlock(rid=0, user=w.uid("ann"), blocked=True))
        async with RivetClient.connect(w.url, w.users["bob"]) as bob:
            await bob.catch_up()
        before = w.users["bob"].sync_token
        async with RivetClient.connect(w.url, w.users["bob"]) as bob:
            await w.call("ann", pa.AccountDelete(rid=0))
            with trio.fail_after(5):
                while True:
                    event = await bob.next_event()
                    if isinstance(event, ContactEvent) and event.user_id == w.uid("ann"):
                        break
            assert event.state == "none"
            listed = await bob.request(rq.ContactsList(rid=0))
            assert w.uid("ann") not in [c.user_id for c in listed.contacts]
            # A device offline meanwhile replays it from the token it had (the live event
            # above went through this state's de-duplication, so ask the server directly).
            replay = await bob.request(rq.Sync(rid=0, token=before, summary=False))
        assert not replay.more
        assert [
            (e.pstream, e.state)
            for e in replay.events
            if isinstance(e, ContactEvent) and e.user_id == w.uid("ann")
        ] == [(event.pstream, "none")]
        personal = w.server.ctx.stores.personal
        assert await personal.contacts_naming(w.uid("ann")) == []
        cy_stream = await personal.personal_changes(w.uid("cy"), after=0, limit=100)
        last = msgspec.msgpack.decode(cy_stream[-1].body)
        assert (last["user_id"], last["state"]) == (w.uid("ann"), "none")
        # Lifting a block of a deleted account stays possible (the row is cy's own).
        await w.call("cy", rq.ContactsBlock(rid=0, user=w.uid("ann"), blocked=False))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a1_a_deleted_account_is_no_such_user_as_a_target(tmp_path: Path, store: str) -> None:
    """A deleted account is gone for everyone else. Before, only ``get_user`` returning
    nothing counted as "no such user", and a deleted user's row stays (marked): a contact
    request recreated personal data for the erased user, a group took them back in, a new
    single chat and its first message went to them, an organisation invited them."""
    async with open_world(tmp_path, store) as w:
        for name in ("ann", "bob", "admin"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        ann = w.uid("ann")
        await w.call("ann", pa.AccountDelete(rid=0))
        personal = w.server.ctx.stores.personal
        for _ in range(100):
            if not await personal.pending_deletions():
                break
            await trio.sleep(0.02)
        assert await personal.pending_deletions() == []
        group = await w.call("bob", rq.GroupCreate(rid=0, cmid="g", title="t", members=[]))
        refused: list[Any] = [
            rq.ContactsAdd(rid=0, cmid="c", user_id=ann),
            rq.ContactsBlock(rid=0, user=ann, blocked=True),
            rq.GroupCreate(rid=0, cmid="g2", title="t", members=[ann]),
            rq.GroupAdd(rid=0, conv=group.conv.conv, users=[ann]),
            rq.DirectOpen(rid=0, peer=ann),
            rq.MsgSend(
                rid=0,
                conv=direct_conversation_id(w.uid("bob"), ann),
                cmid="m",
                content=rq.Content(text="hello?"),
            ),
            pm.Report(rid=0, reason="spam", user=ann),
        ]
        for request in refused:
            with pytest.raises(RivetError) as caught:
                await w.call("bob", request)
            assert caught.value.code == ErrorCode.NOT_FOUND, request
        with pytest.raises(RivetError) as invited:
            await w.call("admin", po.OrgInvite(rid=0, org=org, user=ann))
        assert invited.value.code == ErrorCode.NOT_FOUND
        assert await personal.list_contacts(w.uid("bob")) == []


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a1_an_application_of_an_account_deleted_since_is_not_approved(
    tmp_path: Path, store: str
) -> None:
    """An applicant is not a member yet, so may delete their account; an admin's approval
    afterwards made the deleted user a member for good (found in review). Now it is "no
    such user" (2006), and the organisation's members stay as they were."""
    async with open_world(tmp_path, store) as w:
        for name in ("ann", "admin"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        applied = await w.call("ann", po.OrgApply(rid=0, org=org))
        await w.call("ann", pa.AccountDelete(rid=0))
        with pytest.raises(RivetError) as caught:
            await w.call(
                "admin",
                po.OrgReview(rid=0, org=org, request_id=applied.request.request_id, approve=True),
            )
        assert caught.value.code == ErrorCode.NOT_FOUND
        assert await w.server.ctx.stores.orgs.get_member(org, w.uid("ann")) is None


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a1_an_erased_account_leaves_its_groups_and_chats(tmp_path: Path, store: str) -> None:
    """Before, a deleted member stayed in their groups for good: listed by
    ``group.members``, counted in the group's size and capacity, and in every read
    receipt's "unread"; and a single chat with them went on taking messages nobody would
    read. The erasure now makes them leave both, with the ``left`` entry the others see,
    as if they had left themselves; the chat then refuses messages (no such user)."""
    async with open_world(tmp_path, store) as w:
        for name in ("ann", "bob", "cy"):
            await w.user(name)
        ann = w.uid("ann")
        created = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="g", title="t", members=[ann, w.uid("cy")])
        )
        conv = created.conv.conv
        chat = direct_conversation_id(w.uid("bob"), ann)
        await w.say("bob", chat, "are you there?")
        async with RivetClient.connect(w.url, w.users["cy"]) as cy:
            await w.call("ann", pa.AccountDelete(rid=0))
            with trio.fail_after(5):
                while True:
                    event = await cy.next_event()
                    if isinstance(event, MessageEvent) and event.system is not None:
                        break
            assert event.conv == conv
            assert (event.system.action, event.system.users) == ("left", [ann])
        members = await w.call("bob", rq.GroupMembers(rid=0, conv=conv))
        assert ann not in [m.user_id for m in members.members]
        found = await w.server.ctx.stores.cross.get_conversation(conv)
        assert found is not None and found.member_count == 2
        for _ in range(100):  # the chat is left in the same job, after the group or before
            single = await w.server.ctx.stores.cross.get_conversation(chat)
            if single is not None and single.member_count == 1:
                break
            await trio.sleep(0.02)
        with pytest.raises(RivetError) as refused:
            await w.say("bob", chat, "hello?")
        assert refused.value.code == ErrorCode.NOT_FOUND
        history = await w.call("bob", rq.MsgHistory(rid=0, conv=chat))
        assert [m.content.text for m in history.messages if m.content] == ["are you there?"]
