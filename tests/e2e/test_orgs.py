"""Organisations and the consent rule over real WebSockets (P2-P4, O5, D4, D5, P3).

The consent table: for each kind of data, whether the organisation sees it, checked on every
admin path. The differential test: two worlds that differ only in data the organisation must
not see give byte-identical output on every admin path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from client import RivetClient, RivetError
from protocol import ding as pd
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from server.auth import ServerKeys
from tests.e2e.orgs_world import open_world, texts
from tests.e2e.processes import RIVET, create_users, rivet_server
from tests.e2e.test_enterprise import account

STORES = ["memory", "sqlite"]


@pytest.mark.parametrize("store", STORES)
async def test_p4_joining_needs_both_sides_and_records_the_disclosure(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "alice", "bob", "carol"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        # 1. Admin invites, user accepts: the acceptance records the disclosure (O5).
        invited = await w.call("admin", po.OrgInvite(rid=0, org=org, user=w.uid("alice")))
        assert invited.request.status == "pending_user"
        assert invited.request.disclosure == "Acme audits messages"
        mine = await w.call("alice", po.OrgMine(rid=0))
        assert mine.orgs == []  # not a member until she says yes
        await w.call(
            "alice",
            po.OrgAnswer(rid=0, org=org, request_id=invited.request.request_id, accept=True),
        )
        members = await w.call("admin", po.OrgMembers(rid=0, org=org))
        assert [m.user for m in members.members] == [w.uid("admin"), w.uid("alice")]
        member = await w.server.ctx.stores.orgs.get_member(org, w.uid("alice"))
        assert member is not None and member.disclosure_accepted == "Acme audits messages"
        # D4: accepting the invitation granted no consent.
        consents = await w.call("alice", po.ConsentList(rid=0))
        assert consents.consents == []
        # 2. User applies, admin approves.
        applied = await w.call("bob", po.OrgApply(rid=0, org=org, note="hi"))
        assert applied.request.status == "pending_admin"
        reviewed = await w.call(
            "admin",
            po.OrgReview(rid=0, org=org, request_id=applied.request.request_id, approve=True),
        )
        assert reviewed.request.status == "accepted"
        # 3. Member invites, admin approves, user accepts.
        by_member = await w.call("alice", po.OrgInvite(rid=0, org=org, user=w.uid("carol")))
        assert (by_member.request.kind, by_member.request.status) == (
            "member_invite",
            "pending_admin",
        )
        with pytest.raises(RivetError) as early:
            await w.call(
                "carol",
                po.OrgAnswer(rid=0, org=org, request_id=by_member.request.request_id, accept=True),
            )
        assert early.value.code == ErrorCode.INVALID_STATE  # an admin must approve first
        approved = await w.call(
            "admin",
            po.OrgReview(rid=0, org=org, request_id=by_member.request.request_id, approve=True),
        )
        assert approved.request.status == "pending_user"
        await w.call(
            "carol",
            po.OrgAnswer(rid=0, org=org, request_id=by_member.request.request_id, accept=True),
        )
        members = await w.call("admin", po.OrgMembers(rid=0, org=org))
        assert len(members.members) == 4
        # Leaving and removal.
        await w.call("bob", po.OrgLeave(rid=0, org=org))
        await w.call("admin", po.OrgRemove(rid=0, org=org, user=w.uid("carol")))
        members = await w.call("admin", po.OrgMembers(rid=0, org=org))
        assert [m.user for m in members.members] == [w.uid("admin"), w.uid("alice")]
        with pytest.raises(RivetError) as primary:
            await w.call("admin", po.OrgLeave(rid=0, org=org))
        assert primary.value.code == ErrorCode.INVALID_STATE
        # P3: every admin act is in the audit log.
        audit = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert [e.action for e in audit.entries] == ["invite", "approve", "approve", "remove"]


@pytest.mark.parametrize("store", STORES)
async def test_d4_consent_table_on_every_admin_path(tmp_path: Path, store: str) -> None:
    """Each row: a kind of data, and whether organisation X may see it."""
    async with open_world(tmp_path, store) as w:
        for name in ("xadmin", "member", "outsider", "yadmin", "ymember", "leaver"):
            await w.user(name)
        x = await w.create_org("xadmin", "X")
        y = await w.create_org("yadmin", "Y")
        for name in ("member", "leaver"):
            await w.join(x, "xadmin", name)
        await w.join(y, "yadmin", "ymember")
        async with RivetClient.connect(w.url, w.users["xadmin"]) as feed:
            await feed.request(po.AdminFeed(rid=0, org=x, on=True))
            chat = direct_conversation_id(w.uid("member"), w.uid("outsider"))
            with_admin = direct_conversation_id(w.uid("member"), w.uid("xadmin"))
            y_chat = direct_conversation_id(w.uid("ymember"), w.uid("outsider"))
            leaver_chat = direct_conversation_id(w.uid("leaver"), w.uid("outsider"))

            table: list[tuple[str, bool]] = []

            dings: set[str] = set()

            async def say(name: str, conv: str, text: str, visible: bool) -> None:
                await w.say(name, conv, text)
                table.append((text, visible))

            async def ding(name: str, to: list[str], text: str, visible: bool) -> None:
                # Issue #4: a DING is copied under the same consent rule as a message.
                await w.ding(name, to, text)
                table.append((text, visible))
                dings.add(text)

            await say("member", chat, "before consent", False)
            await ding("member", ["outsider"], "DING before consent", False)
            await say("outsider", chat, "the other party", False)
            await w.consent("member", x, True)
            await say("member", chat, "with consent", True)
            await ding("member", ["outsider"], "DING with consent", True)
            await ding("outsider", ["member"], "the other party's DING", False)
            await say("outsider", chat, "other party while consented", False)
            await say("xadmin", with_admin, "admin as participant, not consented", False)
            await say("member", with_admin, "member to the admin, consented", True)
            await say("member", f"s:{w.uid('member')}", "note to self, consented", True)
            await w.consent("ymember", y, True)
            await say("ymember", y_chat, "another organisation's member", False)
            await ding("ymember", ["outsider"], "another organisation's member's DING", False)
            await w.consent("leaver", x, True)
            await say("leaver", leaver_chat, "leaver before leaving", True)
            await w.call("leaver", po.OrgLeave(rid=0, org=x))
            w.clock.advance(1)
            await say("leaver", leaver_chat, "leaver after leaving", False)
            await w.consent("member", x, False)
            await say("member", chat, "after revocation", False)
            await ding("member", ["outsider"], "DING after revocation", False)
            # D2: organisation-domain data (an organisation-internal chat between two of X's
            # enterprise accounts) and an enterprise account's messages are X's, no consent.
            await w.server.ctx.stores.orgs.set_verified(x, verified=True, now=w.clock.now_ms())
            for name in ("ea1", "ea2"):
                user = await account(w, "xadmin", x, name)
                await w.server.ctx.stores.orgs.set_person_verified(x, user, verified=True)
                w.server.ctx.enterprise.invalidate(user)
            internal = await w.direct("ea1", "ea2")
            assert internal.startswith(f"o:{x}:")
            await say("ea1", internal, "organisation-domain data", True)
            await say("ea2", internal, "organisation-domain reply", True)
            ea_chat = direct_conversation_id(w.uid("ea1"), w.uid("outsider"))
            await say("ea1", ea_chat, "enterprise account to an outsider", True)
            await say("outsider", ea_chat, "outsider to an enterprise account", False)
            # D2: a DING among X's enterprise accounts lives in X's store; an enterprise
            # account's DING to an outsider in the cross-domain one. Both are X's.
            await ding("ea1", ["ea2"], "enterprise account's internal DING", True)
            await ding("ea1", ["outsider"], "enterprise account's DING to an outsider", True)
            await w.settle()

            expected = sorted(text for text, visible in table if visible)
            assert sorted(await texts(w, "xadmin", x)) == expected
            search = await w.call("xadmin", po.AdminSearch(rid=0, org=x, limit=500))
            assert sorted(c.content.text for c in search.copies) == expected
            counts = await w.call("xadmin", po.AdminCounts(rid=0, org=x))
            assert {c.member: c.messages for c in counts.counts} == {
                w.uid("member"): 4,
                w.uid("leaver"): 1,
                w.uid("ea1"): 4,
                w.uid("ea2"): 1,
            }
            # A DING's copy says it is one, and holds its text only.
            assert {c.content.text for c in search.copies if c.origin == "ding"} == {
                text for text in dings if text in expected
            }
            fed = []
            with trio.move_on_after(2):
                while len(fed) < len(expected):
                    event = await feed.next_event()
                    if isinstance(event, po.OrgCopyEvent):
                        fed.append(event.copy.content.text)
            assert sorted(fed) == expected
            # The copies hold only the member's own words, an opaque reference, a time.
            for copy in search.copies:
                assert copy.conv_ref not in (chat, with_admin, internal, ea_chat)
                assert len(copy.conv_ref) == 32
            # Another organisation sees none of X's copies, and X none of Y's.
            assert await texts(w, "yadmin", y) == [
                "another organisation's member",
                "another organisation's member's DING",
            ]
            # An outsider or a plain member is refused like a missing organisation.
            for name, code in (("outsider", ErrorCode.NOT_FOUND), ("member", ErrorCode.FORBIDDEN)):
                with pytest.raises(RivetError) as refused:
                    await w.call(name, po.AdminExport(rid=0, org=x))
                assert refused.value.code == code
            with pytest.raises(RivetError) as missing:
                await w.call("outsider", po.AdminExport(rid=0, org=9999))
            assert (missing.value.code, missing.value.message) == (
                refused_code := ErrorCode.NOT_FOUND,
                "no such organisation",
            ) and refused_code == ErrorCode.NOT_FOUND
            # Y's copy ids are not reachable from X: the same error as a missing copy.
            errors = []
            for copy_id in (1, 999):
                with pytest.raises(RivetError) as err:
                    await w.call(
                        "yadmin", po.AdminHide(rid=0, org=y, copy_id=copy_id + 10, hidden=True)
                    )
                errors.append((err.value.code, err.value.message))
            assert errors[0] == errors[1]


@pytest.mark.parametrize("store", STORES)
async def test_d4_revoking_stops_new_copies_and_old_ones_stay(tmp_path: Path, store: str) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "member", "friend"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "member")
        chat = direct_conversation_id(w.uid("member"), w.uid("friend"))
        await w.consent("member", org, True)
        await w.say("member", chat, "kept")
        await w.consent("member", org, False)
        await w.say("member", chat, "never copied")
        await w.consent("member", org, True)
        await w.say("member", chat, "copied again")
        await w.settle()
        assert await texts(w, "admin", org) == ["kept", "copied again"]


@pytest.mark.parametrize("store", STORES)
async def test_o1_o2_admin_recall_and_hide_act_only_on_the_copy(tmp_path: Path, store: str) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "member", "friend"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "member")
        await w.consent("member", org, True)
        chat = direct_conversation_id(w.uid("member"), w.uid("friend"))
        await w.say("member", chat, "first")
        await w.say("member", chat, "second")
        await w.settle()
        hidden = await w.call("admin", po.AdminHide(rid=0, org=org, copy_id=1, hidden=True))
        assert hidden.copy.hidden
        search = await w.call("admin", po.AdminSearch(rid=0, org=org))
        assert [c.content.text for c in search.copies] == ["second"]
        recalled = await w.call("admin", po.AdminRecall(rid=0, org=org, copy_id=2))
        assert recalled.copy.recalled and recalled.copy.content is None
        # The cross-domain conversation is untouched (O1): both messages are still there.
        async with RivetClient.connect(w.url, w.users["friend"]) as friend:
            history = await friend.request(rq.MsgHistory(rid=0, conv=chat))
            assert [m.content.text for m in history.messages] == ["first", "second"]
        audit = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert [e.action for e in audit.entries][-3:] == ["hide", "search", "recall"]


@pytest.mark.parametrize("store", STORES)
async def test_o1_o2_admin_recall_and_hide_of_a_ding_copy_leave_the_ding(
    tmp_path: Path, store: str
) -> None:
    """Issue #4: a DING's copy is the organisation's view only; hiding or recalling it never
    rewrites the DING its recipients see."""
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "member", "friend"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "member")
        await w.consent("member", org, True)
        await w.say("member", direct_conversation_id(w.uid("member"), w.uid("friend")), "hi")
        first = await w.ding("member", ["friend"], "first DING")
        second = await w.ding("member", ["friend"], "second DING")
        await w.settle()
        page = await w.call("admin", po.AdminExport(rid=0, org=org))
        copies = {c.content.text: c for c in page.copies}
        assert [copies[t].origin for t in ("hi", "first DING", "second DING")] == [
            "message",
            "ding",
            "ding",
        ]
        hidden = await w.call(
            "admin",
            po.AdminHide(rid=0, org=org, copy_id=copies["first DING"].copy_id, hidden=True),
        )
        assert hidden.copy.hidden and hidden.copy.origin == "ding"
        recalled = await w.call(
            "admin", po.AdminRecall(rid=0, org=org, copy_id=copies["second DING"].copy_id)
        )
        assert recalled.copy.recalled and recalled.copy.content is None
        assert recalled.copy.origin == "ding"  # still told apart once its text is erased
        assert await texts(w, "admin", org, member=w.uid("member")) == ["hi", "first DING"]
        # The DINGs themselves are untouched (O1: an admin never rewrites them).
        for ding_id, text in ((first, "first DING"), (second, "second DING")):
            got = await w.call("friend", pd.DingGet(rid=0, ding_id=ding_id))
            assert got.ding.text == text


@pytest.mark.parametrize("store", STORES)
async def test_d4_differential_two_worlds_differing_only_in_invisible_data(
    tmp_path: Path, store: str
) -> None:
    """World B adds only what X must not see: a non-consenting member's messages, the
    other parties' words, and another organisation's consented data. Every admin path of X
    answers byte for byte the same."""
    outputs = []
    keys = ServerKeys.ephemeral()  # the same server keys, so keyed fields compare too
    for extra in (False, True):
        async with open_world(tmp_path / ("b" if extra else "a"), store, keys=keys) as w:
            for name in ("xadmin", "member", "quiet", "outsider", "yadmin", "ymember"):
                await w.user(name)
            x = await w.create_org("xadmin", "X")
            y = await w.create_org("yadmin", "Y")
            await w.join(x, "xadmin", "member")
            await w.join(x, "xadmin", "quiet")
            await w.join(y, "yadmin", "ymember")
            await w.consent("member", x, True)
            chat = direct_conversation_id(w.uid("member"), w.uid("outsider"))
            await w.say("member", chat, "visible one")
            if extra:
                await w.say("outsider", chat, "the outsider's reply")
                await w.say(
                    "quiet",
                    direct_conversation_id(w.uid("quiet"), w.uid("outsider")),
                    "quiet never consented",
                )
                await w.consent("ymember", y, True)
                await w.say(
                    "ymember",
                    direct_conversation_id(w.uid("ymember"), w.uid("outsider")),
                    "Y's data",
                )
                # Issue #4: DINGs X must not see (the other party's, a non-consenting
                # member's, another organisation's member's) change nothing either.
                await w.ding("outsider", ["member"], "the outsider's DING")
                await w.ding("quiet", ["outsider"], "quiet's DING")
                await w.ding("ymember", ["outsider"], "Y's DING")
            else:
                # Keep the clock in step with world B, so times match.
                w.clock.advance(7)
            await w.say("member", chat, "visible two")
            await w.settle()  # copies in a fixed order: the DING's last
            await w.ding("member", ["outsider"], "visible DING")
            await w.settle()
            outputs.append(await w.admin_outputs("xadmin", x, ["member", "quiet", "outsider"]))
    first, second = outputs
    assert first.keys() == second.keys()
    for path in first:
        assert first[path] == second[path], f"admin path {path!r} differs"


async def test_p2_operator_verifies_and_names_stay_unique_and_admin_exports_to_a_file(
    tmp_path: Path,
) -> None:
    """P2 through `rivet org verify`; D5 export through `rivet org export` as the admin."""
    data = tmp_path / "data"
    admin, member, friend, other = create_users(data, 4)
    async with rivet_server(data) as (_, url):
        async with RivetClient.connect(url, admin) as a:
            org = (await a.request(po.OrgCreate(rid=0, name="Acme"))).org.org
            invited = await a.request(po.OrgInvite(rid=0, org=org, user=member.user_id))
        async with RivetClient.connect(url, other) as o:
            twin = (await o.request(po.OrgCreate(rid=0, name="Acme"))).org.org
        async with RivetClient.connect(url, member) as m:
            await m.request(
                po.OrgAnswer(rid=0, org=org, request_id=invited.request.request_id, accept=True)
            )
            await m.request(po.ConsentSet(rid=0, org=org, granted=True))
            for i in range(3):
                await m.send(direct_conversation_id(member.user_id, friend.user_id), f"m{i}")
        verified = await trio.run_process(
            [*RIVET, "org", "verify", "--data-dir", str(data), "--org", str(org)],
            capture_stdout=True,
        )
        assert json.loads(verified.stdout)["verified"] is True
        clash = await trio.run_process(
            [*RIVET, "org", "verify", "--data-dir", str(data), "--org", str(twin)],
            capture_stderr=True,
            check=False,
        )
        assert clash.returncode == 1 and b"already has this name" in clash.stderr
        token_file = tmp_path / "token"
        token_file.write_text(admin.access_token or "")
        out = tmp_path / "export.jsonl"
        for _ in range(50):  # the relay copies right after each commit
            done = await trio.run_process(
                [
                    *RIVET,
                    "org",
                    "export",
                    "--url",
                    url,
                    "--token-file",
                    str(token_file),
                    "--org",
                    str(org),
                    "--out",
                    str(out),
                ],
                capture_stderr=True,
            )
            if len(out.read_text().splitlines()) == 3:
                break
            await trio.sleep(0.1)
        assert b"exported 3 messages" in done.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["content"]["text"] for r in rows] == ["m0", "m1", "m2"]
        assert all(r["member"] == member.user_id for r in rows)


async def test_d4_rejoining_needs_new_consent_and_d5_feed_stops_for_a_removed_admin(
    tmp_path: Path,
) -> None:
    async with open_world(tmp_path, "memory") as w:
        for name in ("admin", "auditor", "member", "friend"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        with pytest.raises(RivetError) as outsider:
            await w.consent("member", org, True)
        assert outsider.value.code == ErrorCode.NOT_MEMBER  # consent only as a member
        await w.join(org, "admin", "member")
        await w.join(org, "admin", "auditor")
        await w.call(
            "admin",
            po.OrgSetAdmin(
                rid=0, org=org, user=w.uid("auditor"), role="admin", permissions=["audit"]
            ),
        )
        again = await w.call("admin", po.OrgInvite(rid=0, org=org, user=w.uid("friend")))
        twice = await w.call("admin", po.OrgInvite(rid=0, org=org, user=w.uid("friend")))
        assert again.request.request_id == twice.request.request_id  # retry-safe
        chat = direct_conversation_id(w.uid("member"), w.uid("friend"))
        async with RivetClient.connect(w.url, w.users["auditor"]) as auditor:
            await auditor.request(po.AdminFeed(rid=0, org=org, on=True))
            await w.consent("member", org, True)
            await w.say("member", chat, "first membership")
            await w.settle()
            with trio.fail_after(5):
                while not isinstance(event := await auditor.next_event(), po.OrgCopyEvent):
                    pass
            assert event.copy.content is not None and event.copy.content.text == "first membership"
            await w.call("admin", po.OrgRemove(rid=0, org=org, user=w.uid("auditor")))
            await w.call("member", po.OrgLeave(rid=0, org=org))
            w.clock.advance(1)
            await w.join(org, "admin", "member")
            await w.say("member", chat, "after rejoining, no consent yet")
            await w.consent("member", org, True)
            await w.say("member", chat, "consented again")
            await w.settle()
            assert await texts(w, "admin", org) == ["first membership", "consented again"]
            assert w.server.ctx.org_feeds.watching(org) == 0  # the removed admin's feed stopped


async def test_o4_dissolution_needs_confirmation_and_finishes_after_a_crash(tmp_path: Path) -> None:
    """The summary deletes nothing; the token starts it; a job interrupted midway (here: the
    server stops after marking and one chunk) finishes when the server comes back."""
    from server.dissolution import Dissolver

    async with open_world(tmp_path, "sqlite") as w:
        for name in ("admin", "member", "friend"):
            await w.user(name)
        org = await w.create_org("admin", "Doomed")
        keep = await w.create_org("friend", "Kept")
        await w.join(org, "admin", "member")
        await w.consent("member", org, True)
        chat = direct_conversation_id(w.uid("member"), w.uid("friend"))
        for i in range(5):
            await w.say("member", chat, f"m{i}")
        await w.settle()
        with pytest.raises(RivetError) as not_primary:
            await w.call("member", po.OrgDissolve(rid=0, org=org))
        assert not_primary.value.code == ErrorCode.FORBIDDEN
        summary = await w.call("admin", po.OrgDissolve(rid=0, org=org))
        assert (summary.members, summary.copies, summary.name) == (2, 5, "Doomed")
        assert len(await texts(w, "admin", org)) == 5  # asking deleted nothing
        with pytest.raises(RivetError) as bad:
            await w.call("admin", po.OrgDissolveConfirm(rid=0, org=org, token=summary.token + "0"))
        assert bad.value.code == ErrorCode.INVALID_FIELD
        # Simulate the crash: stop the job from running in this server, confirm, then let
        # only one small chunk happen before the server goes away.
        store = w.server.ctx.stores.orgs
        w.server.ctx.dissolver.kick = lambda: None  # type: ignore[assignment]
        await w.call("admin", po.OrgDissolveConfirm(rid=0, org=org, token=summary.token))
        assert await store.delete_chunk(org, limit=2) == 2
        assert await store.dissolving() == [org]
        with pytest.raises(RivetError) as gone:
            await w.call("admin", po.AdminExport(rid=0, org=org))
        assert gone.value.code == ErrorCode.NOT_FOUND
        assert (await w.call("member", po.OrgMine(rid=0))).orgs == []
        users = dict(w.users)
    # Same data directory, new server: the job resumes at start and finishes.
    async with open_world(tmp_path, "sqlite") as w2:
        w2.users.update(users)
        dissolver: Dissolver = w2.server.ctx.dissolver
        for _ in range(100):
            # Both: a reader sees the org gone as soon as the last delete commits, before
            # the dissolver's task has its answer and counts the organisation.
            if dissolver.dissolved and await w2.server.ctx.stores.orgs.get_org(org) is None:
                break
            await trio.sleep(0.05)
        assert await w2.server.ctx.stores.orgs.get_org(org) is None
        assert dissolver.dissolved == 1
        assert (await w2.server.ctx.stores.orgs.get_org(keep)) is not None
        # Cross-domain conversations stay with their participants.
        async with RivetClient.connect(w2.url, users["friend"]) as friend:
            history = await friend.request(rq.MsgHistory(rid=0, conv=chat))
            assert [m.content.text for m in history.messages] == [f"m{i}" for i in range(5)]
