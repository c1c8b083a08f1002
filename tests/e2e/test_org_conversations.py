"""D2: organisation-internal conversations live in the organisation's store, over real
WebSockets.

A single chat or group among one organisation's enterprise accounts is kept in the
organisation conversations store (ids ``o:<org>:...``), never in the cross-domain one; it
holds nobody else; it is caught up through the third position of the sync token; admins
see it whole and can recall or hide in it for everyone (O1, O2); dissolution deletes it
(O4). Cross-domain conversations are untouched by all of this.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from client import RivetClient
from protocol import live as pl
from protocol import orgs as po
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import MessageEvent, RecallEvent
from protocol.sync import SyncToken
from tests.e2e.orgs_world import World, open_world, texts
from tests.e2e.test_enterprise import account, direct, refused, text, verified_org

STORES = ["memory", "sqlite"]


async def acme(w: World) -> int:
    """Admin (a personal user) runs verified organisation Acme with enterprise accounts bob
    and eve; pat is a personal user outside it; zed an account of another organisation.
    Every account is person-verified (O3), so only the placement rule refuses anything."""
    await w.user("admin")
    await w.user("pat")
    org = await verified_org(w, "admin", "Acme")
    await w.user("other_admin")
    other = await verified_org(w, "other_admin", "Other")
    for owner, in_org, name in (
        ("admin", org, "bob"),
        ("admin", org, "eve"),
        ("other_admin", other, "zed"),
    ):
        user = await account(w, owner, in_org, name)
        await w.server.ctx.stores.orgs.set_person_verified(in_org, user, verified=True)
        w.server.ctx.enterprise.invalidate(user)
    return org


async def org_team(w: World, org: int) -> replies.GroupCreated:
    """Bob's organisation-internal group with eve (D2)."""
    created: replies.GroupCreated = await w.call(
        "bob", rq.GroupCreate(rid=0, cmid="g", title="team", members=[w.uid("eve")], org=org)
    )
    return created


@pytest.mark.parametrize("store", STORES)
async def test_d2_single_chat_between_accounts_of_one_org_lives_in_its_store(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        org = await acme(w)
        conv = await w.direct("bob", "eve")
        assert conv == f"o:{org}:{direct(w, 'bob', 'eve')}"
        async with RivetClient.connect(w.url, w.users["eve"]) as eve:
            await w.say("bob", conv, "inside")
            with trio.fail_after(5):
                live = await eve.next_message(conv=conv)
            assert live.content is not None and live.content.text == "inside"
        stores = w.server.ctx.stores
        assert await stores.org_conversations.get_conversation(conv) is not None
        assert await stores.cross.get_conversation(conv) is None
        assert await stores.cross.get_conversation(direct(w, "bob", "eve")) is None
        # The cross-domain id for the same two accounts is refused, naming the right one.
        code = await refused(w, "bob", text(direct(w, "bob", "eve")))
        assert code == ErrorCode.ORGANISATION_CONVERSATION
        # An outsider cannot be in it, whatever id they try.
        outsider_id = f"o:{org}:{direct(w, 'bob', 'pat')}"
        assert await refused(w, "bob", text(outsider_id)) == ErrorCode.ORGANISATION_CONVERSATION
        assert await refused(w, "pat", text(conv)) == ErrorCode.NOT_FOUND
        # Chats with outsiders stay cross-domain (D3).
        assert await w.direct("bob", "pat") == direct(w, "bob", "pat")
        assert await w.direct("bob", "zed") == direct(w, "bob", "zed")


@pytest.mark.parametrize("store", STORES)
async def test_d2_org_group_holds_only_the_orgs_enterprise_accounts(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        org = await acme(w)
        created = await org_team(w, org)
        conv = created.conv.conv
        assert conv.startswith(f"o:{org}:g:")
        assert await w.server.ctx.stores.org_conversations.get_conversation(conv) is not None
        await w.say("eve", conv, "in the team")
        for outsider in ("pat", "zed"):
            add = rq.GroupAdd(rid=0, conv=conv, users=[w.uid(outsider)])
            assert await refused(w, "bob", add) == ErrorCode.ORGANISATION_CONVERSATION
        # Creating one in an organisation's name needs everyone to be its account.
        for creator, members in (("pat", []), ("bob", [w.uid("pat")]), ("zed", [])):
            create = rq.GroupCreate(rid=0, cmid="x", title="t", members=members, org=org)
            assert await refused(w, creator, create) == ErrorCode.ORGANISATION_CONVERSATION
        # Without ``org`` a group of the same accounts is an ordinary cross-domain one.
        plain: replies.GroupCreated = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="p", title="plain", members=[w.uid("eve")])
        )
        assert plain.conv.conv.startswith("g:")


@pytest.mark.parametrize("store", STORES)
async def test_d2_catch_up_spans_both_conversation_stores(tmp_path: Path, store: str) -> None:
    async with open_world(tmp_path, store) as w:
        await acme(w)
        inside, outside = await w.direct("bob", "eve"), await w.direct("bob", "pat")
        async with RivetClient.connect(w.url, w.users["eve"]) as eve:
            await eve.catch_up()  # the device's starting point
        for n in range(3):
            await w.say("bob", inside, f"inside {n}")
        await w.say("bob", outside, "to pat")
        async with RivetClient.connect(w.url, w.users["eve"]) as eve:
            events = await eve.catch_up(page=2)  # small pages: every stream is paged
        got = [e.content.text for e in events if isinstance(e, MessageEvent) and e.content]
        assert got == ["inside 0", "inside 1", "inside 2"]
        token = SyncToken.decode(w.users["eve"].sync_token or "")
        assert token.organisation > 0
        async with RivetClient.connect(w.url, w.users["pat"]) as pat:
            page: replies.SyncPage = await pat.request(rq.Sync(rid=0, token="1.0.0"))
        # A version 1 token (before organisation conversations) still works.
        assert [e.conv for e in page.events if isinstance(e, MessageEvent)] == [outside]


@pytest.mark.parametrize("store", STORES)
async def test_o1_o2_admin_recall_and_hide_reach_the_orgs_own_conversation(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        org = await acme(w)
        await w.user("friend")
        await w.join(org, "admin", "friend")
        await w.consent("friend", org, True)
        inside = await w.direct("bob", "eve")
        outside = direct(w, "friend", "pat")
        await w.say("bob", inside, "secret plan")
        await w.say("bob", inside, "lunch?")
        await w.say("friend", outside, "consented words")
        await w.settle()
        # Organisation-domain data is the organisation's: all of it is visible (D2).
        assert await texts(w, "admin", org) == ["secret plan", "lunch?", "consented words"]
        page: po.CopyPage = await w.call("admin", po.AdminExport(rid=0, org=org))
        by_text = {c.content.text: c for c in page.copies if c.content is not None}
        async with RivetClient.connect(w.url, w.users["eve"]) as eve:
            await w.call(
                "admin", po.AdminRecall(rid=0, org=org, copy_id=by_text["secret plan"].copy_id)
            )
            with trio.fail_after(5):
                event = await eve.next_event()
                while not isinstance(event, RecallEvent):
                    event = await eve.next_event()
            assert (event.conv, event.seq, event.by) == (inside, 1, w.uid("admin"))
            await w.call(
                "admin",
                po.AdminHide(rid=0, org=org, copy_id=by_text["lunch?"].copy_id, hidden=True),
            )
        history: replies.History = await w.call("eve", rq.MsgHistory(rid=0, conv=inside))
        assert [(m.seq, m.recalled, m.content) for m in history.messages] == [
            (1, True, None),
            (2, True, None),
        ]
        # The hidden copy keeps its content in the organisation's record (the export);
        # the recalled one does not.
        assert await texts(w, "admin", org) == ["lunch?", "consented words"]
        search: po.CopyPage = await w.call("admin", po.AdminSearch(rid=0, org=org))
        assert [c.content.text for c in search.copies if c.content] == ["consented words"]
        # Recalling the consented member's copy never touches the cross-domain chat.
        await w.call(
            "admin", po.AdminRecall(rid=0, org=org, copy_id=by_text["consented words"].copy_id)
        )
        kept: replies.History = await w.call("pat", rq.MsgHistory(rid=0, conv=outside))
        assert [m.content.text for m in kept.messages if m.content] == ["consented words"]


@pytest.mark.parametrize("store", STORES)
async def test_l1_d2_a_live_stream_in_an_org_group_is_recorded_in_the_orgs_store(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        org = await acme(w)
        team = await org_team(w, org)
        plain: replies.GroupCreated = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="p", title="plain", members=[w.uid("pat")])
        )
        conv, other = team.conv.conv, plain.conv.conv
        # A stream links only groups of its own domain (its record names them).
        mixed = pl.LiveStart(rid=0, conv=conv, title="all hands", link_groups=[other])
        assert await refused(w, "bob", mixed) == ErrorCode.ORGANISATION_CONVERSATION
        async with RivetClient.connect(w.url, w.users["bob"]) as bob:
            started: pl.LiveJoined = await bob.request(
                pl.LiveStart(rid=0, conv=conv, title="all hands")
            )
            live_id = started.live.live_id
            assert live_id == f"{conv}/1"
            joined: pl.LiveJoined = await w.call("eve", pl.LiveJoin(rid=0, live_id=live_id))
            assert joined.role == "viewer"
            stores = w.server.ctx.stores
            assert await stores.org_live.get_live(conv, 1) is not None
            assert await stores.live.get_live(conv, 1) is None
            await bob.request(pl.LiveEnd(rid=0, live_id=live_id))


@pytest.mark.parametrize("store", STORES)
async def test_o4_dissolution_deletes_the_orgs_own_conversations_and_keeps_cross_domain(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        org = await acme(w)
        inside = await w.direct("bob", "eve")
        outside = await w.direct("pat", "bob")
        team = await org_team(w, org)
        await w.say("bob", inside, "internal")
        await w.say("eve", team.conv.conv, "team talk")
        await w.say("pat", outside, "pat's own words")
        started: pl.LiveJoined = await w.call(
            "bob", pl.LiveStart(rid=0, conv=team.conv.conv, title="all hands")
        )
        await w.settle()
        stores = w.server.ctx.stores
        summary = await w.dissolve("admin", org)
        assert (summary.conversations, summary.enterprise_accounts) == (2, 2)
        for conv in (inside, team.conv.conv):
            assert await stores.org_conversations.get_conversation(conv) is None
        origin, number = started.live.live_id.split("/")
        assert await stores.org_live.get_live(origin, int(number)) is None
        assert await stores.org_conversations.entries_for(w.uid("eve"), after=0, limit=10) == []
        # The cross-domain chat stays with its participants (O4): pat still reads it.
        kept: replies.History = await w.call("pat", rq.MsgHistory(rid=0, conv=outside))
        assert [m.content.text for m in kept.messages if m.content] == ["pat's own words"]
