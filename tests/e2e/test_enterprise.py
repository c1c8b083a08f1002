"""Enterprise accounts over real WebSockets (P5), real-person verification (O3) and the
information-security controls (O1)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import trio

from client import RivetClient, RivetError
from protocol import ding as pd
from protocol import enterprise as pe
from protocol import live as pl
from protocol import orgs as po
from protocol import replies
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id
from server import cli_org
from storage.enterprise import EnterpriseAccount
from tests.e2e.orgs_world import World, login_enterprise_at, open_world, texts

STORES = ["memory", "sqlite"]
PASSWORD = "correct horse battery"


async def login_enterprise(w: World, org: int, account: str, password: str = PASSWORD) -> Any:
    return await login_enterprise_at(w.url, org, account, password)


async def login_refused(w: World, org: int, account: str, password: str = PASSWORD) -> int:
    with pytest.raises(RivetError) as refused:
        await login_enterprise(w, org, account, password)
    return refused.value.code


async def verified_org(w: World, admin: str, name: str) -> int:
    org = await w.create_org(admin, name)
    await w.server.ctx.stores.orgs.set_verified(org, verified=True, now=w.clock.now_ms())
    return org


async def account(w: World, admin: str, org: int, name: str, *, phone: str | None = None) -> int:
    """Create an enterprise account (with the contact ``phone`` for its DING SMS and calls,
    if given), log in as it, and register it in the world as ``name``."""
    created: pe.AccountResult = await w.call(
        admin, pe.OrgAccountCreate(rid=0, org=org, account=name, password=PASSWORD, phone=phone)
    )
    w.users[name] = await login_enterprise(w, org, name)
    assert w.uid(name) == created.account.user
    return created.account.user


async def refused(w: World, name: str, request: rq.Request) -> int:
    with pytest.raises(RivetError) as error:
        await w.call(name, request)
    return error.value.code


def text(conv: str, body: str = "hi", cmid: str = "c") -> rq.MsgSend:
    return rq.MsgSend(rid=0, conv=conv, cmid=cmid, content=rq.Content(text=body))


def direct(w: World, a: str, b: str) -> str:
    return direct_conversation_id(w.uid(a), w.uid(b))


class YesVerifier:
    """Stands in for a real-person verification provider."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def verify(self, account: EnterpriseAccount) -> bool:
        self.asked.append(account.user_id)
        return True


@pytest.mark.parametrize("store", STORES)
async def test_p5_accounts_need_a_verified_org_and_log_in_with_a_password(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "alice", "loner"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "alice")
        create = pe.OrgAccountCreate(
            rid=0, org=org, account="bob", password=PASSWORD, display_name="Bob"
        )
        assert await refused(w, "admin", create) == ErrorCode.FORBIDDEN  # not verified
        await w.server.ctx.stores.orgs.set_verified(org, verified=True, now=w.clock.now_ms())
        assert await refused(w, "alice", create) == ErrorCode.FORBIDDEN  # no 'members'
        assert await refused(w, "loner", create) == ErrorCode.NOT_FOUND  # no organisation
        created: pe.AccountResult = await w.call("admin", create)
        info = created.account
        assert (info.org, info.account, info.status, info.person_verified, info.controls) == (
            org,
            "bob",
            "active",
            False,
            [],
        )
        assert info.user not in (w.uid("admin"), w.uid("alice"))  # its own identity
        assert await refused(w, "admin", create) == ErrorCode.INVALID_STATE  # name taken
        # Login: organisation + account name + password.
        assert await login_refused(w, org, "bob", "wrong password") == ErrorCode.AUTH_FAILED
        assert await login_refused(w, org, "nobody") == ErrorCode.AUTH_FAILED
        assert await login_refused(w, org + 1, "bob") == ErrorCode.AUTH_FAILED
        w.clock.advance(5)
        w.users["bob"] = await login_enterprise(w, org, "bob")
        assert w.uid("bob") == info.user
        users: replies.Users = await w.call("bob", rq.UsersGet(rid=0, user_ids=[info.user]))
        assert users.users[0].display_name == "Bob"
        # The account is the organisation's member; its admins read its login records.
        members: po.OrgMemberPage = await w.call("admin", po.OrgMembers(rid=0, org=org))
        assert info.user in [m.user for m in members.members]
        logins: pe.LoginRecords = await w.call(
            "admin", pe.OrgAccountLogins(rid=0, org=org, user=info.user)
        )
        assert [(r.ok, r.reason) for r in logins.records] == [(True, ""), (False, "wrong_password")]
        assert logins.records[0].ts > logins.records[1].ts
        assert (
            await refused(w, "alice", pe.OrgAccountLogins(rid=0, org=org, user=info.user))
            == ErrorCode.FORBIDDEN
        )
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert [e.action for e in audit.entries][-2:] == ["account.create", "account.logins"]
        # A personal user is never an enterprise account.
        assert await refused(w, "alice", pe.EnterpriseUnverifySelf(rid=0)) == ErrorCode.NOT_FOUND


async def test_p5_disable_ban_cancel_close_connections_and_refuse_login(tmp_path: Path) -> None:
    async with open_world(tmp_path, "memory") as w:
        for name in ("admin", "other"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other_org = await verified_org(w, "other", "Other")
        bob = await account(w, "admin", org, "bob")
        # Another organisation cannot reach Acme's account.
        assert (
            await refused(
                w, "other", pe.OrgAccountStatus(rid=0, org=other_org, user=bob, status="banned")
            )
            == ErrorCode.NOT_FOUND
        )
        async with RivetClient.connect(w.url, w.users["bob"]) as b:
            result: pe.AccountResult = await w.call(
                "admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="disabled")
            )
            assert result.account.status == "disabled"
            with trio.fail_after(5):
                await b.conn.closed.wait()
            assert b.conn.close_code == CloseCode.ACCOUNT_SUSPENDED
        with pytest.raises(RivetError):  # its tokens were revoked
            await w.call("bob", rq.Ping(rid=0))
        assert await login_refused(w, org, "bob") == ErrorCode.ACCOUNT_DISABLED
        assert await login_refused(w, org, "bob", "wrong password") == ErrorCode.AUTH_FAILED
        await w.call("admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="active"))
        w.users["bob"] = await login_enterprise(w, org, "bob")
        await w.call("admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="banned"))
        assert await login_refused(w, org, "bob") == ErrorCode.ACCOUNT_DISABLED
        await w.call("admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="cancelled"))
        assert await login_refused(w, org, "bob") == ErrorCode.ACCOUNT_DISABLED
        assert (
            await refused(
                w, "admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="active")
            )
            == ErrorCode.INVALID_STATE
        )
        logins: pe.LoginRecords = await w.call(
            "admin", pe.OrgAccountLogins(rid=0, org=org, user=bob)
        )
        assert [r.reason for r in logins.records] == [
            "cancelled",
            "banned",
            "",
            "wrong_password",
            "disabled",
            "",
        ]
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert [e.target for e in audit.entries if e.action == "account.status"] == [
            f"user:{bob}:disabled",
            f"user:{bob}:active",
            f"user:{bob}:banned",
            f"user:{bob}:cancelled",
        ]
        # An enterprise account leaves its organisation only by being cancelled.
        carol = await account(w, "admin", org, "carol")
        assert carol != bob
        leave = po.OrgLeave(rid=0, org=org)
        assert await refused(w, "carol", leave) == ErrorCode.ENTERPRISE_ACCOUNT_BOUND


@pytest.mark.parametrize("store", STORES)
async def test_g1_p5_admins_set_change_and_clear_an_accounts_contact_phone(
    tmp_path: Path, store: str
) -> None:
    """P5: the contact phone (where the account's DING SMS and calls go, G1) is the
    organisation's to set, at creation or with ``org.account.phone``, E.164 only, by admins
    with ``members``, each act in the audit log (P3). It is no login identifier and nobody
    else finds or sees it."""
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "alice", "auditor", "other", "friend"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other_org = await verified_org(w, "other", "Other")
        for member in ("alice", "auditor"):
            await w.join(org, "admin", member)
        await w.call(
            "admin",
            po.OrgSetAdmin(
                rid=0, org=org, user=w.uid("auditor"), role="admin", permissions=["audit"]
            ),
        )
        bob = await account(w, "admin", org, "bob", phone="+15550000123")
        carol = await account(w, "admin", org, "carol")
        created: pe.AccountResult = await w.call(
            "admin", pe.OrgAccountPhone(rid=0, org=org, user=carol, phone="+4930123456")
        )
        assert created.account.phone == "+4930123456" and created.account.account == "carol"
        changed: pe.AccountResult = await w.call(
            "admin", pe.OrgAccountPhone(rid=0, org=org, user=bob, phone="+4930999")
        )
        assert changed.account.phone == "+4930999"
        kept = await w.server.ctx.stores.orgs.account_of_user(bob)
        assert kept is not None and kept.phone == "+4930999"
        # Validation: E.164 only (a leading +, 4 to 15 digits).
        for bad in ("015550000123", "+0123456", "+1 555 000", "+12", "ent:1:bob", ""):
            set_bad = pe.OrgAccountPhone(rid=0, org=org, user=bob, phone=bad)
            assert await refused(w, "admin", set_bad) == ErrorCode.INVALID_FIELD
        create_bad = pe.OrgAccountCreate(
            rid=0, org=org, account="dave", password=PASSWORD, phone="5550000"
        )
        assert await refused(w, "admin", create_bad) == ErrorCode.INVALID_FIELD
        # Permission: `members` only; another organisation's admin finds no such account.
        attempt = pe.OrgAccountPhone(rid=0, org=org, user=bob, phone="+15550000999")
        for caller in ("alice", "auditor"):
            assert await refused(w, caller, attempt) == ErrorCode.FORBIDDEN
        assert await refused(w, "bob", attempt) == ErrorCode.FORBIDDEN  # not even itself
        assert await refused(w, "friend", attempt) == ErrorCode.NOT_FOUND  # not a member
        theirs = pe.OrgAccountPhone(rid=0, org=other_org, user=bob, phone="+15550000999")
        assert await refused(w, "other", theirs) == ErrorCode.NOT_FOUND
        cleared: pe.AccountResult = await w.call(
            "admin", pe.OrgAccountPhone(rid=0, org=org, user=bob, phone=None)
        )
        assert cleared.account.phone is None
        # The other account settings carry it unchanged.
        status: pe.AccountResult = await w.call(
            "admin", pe.OrgAccountControls(rid=0, org=org, user=carol, controls=["no_live"])
        )
        assert status.account.phone == "+4930123456"
        # P3: every change is logged, saying set or cleared (the number stays in the record).
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org, limit=100))
        assert [e.target for e in audit.entries if e.action == "account.phone"] == [
            f"user:{carol}:set",
            f"user:{bob}:set",
            f"user:{bob}:cleared",
        ]
        assert all(e.actor == w.uid("admin") for e in audit.entries if e.action == "account.phone")
        # Never a login identifier, never found or shown to others: the account's user row
        # keeps its placeholder, a contact search by the number finds nobody, a profile
        # shows a display name only.
        row = await w.server.ctx.stores.personal.get_user(carol)
        assert row is not None and row.phone == f"ent:{org}:carol"
        find = rq.ContactsAdd(rid=0, cmid="c1", phone="+4930123456")
        assert await refused(w, "friend", find) == ErrorCode.NOT_FOUND
        users: replies.Users = await w.call("friend", rq.UsersGet(rid=0, user_ids=[carol]))
        assert "+4930123456" not in repr(users)


@pytest.mark.parametrize("store", STORES)
async def test_p5_an_enterprise_account_is_neither_removed_nor_leaves(
    tmp_path: Path, store: str
) -> None:
    """P5: an enterprise account belongs to its organisation for its whole life. ``org.remove``
    and ``org.leave`` are refused with 3009 (cancel it instead); the membership stays, the
    refusal writes nothing to the audit log; cancelling still works; ordinary members are
    still removed; another organisation's admin learns nothing about the account."""
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "alice", "other"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other_org = await verified_org(w, "other", "Other")
        await w.join(org, "admin", "alice")
        bob = await account(w, "admin", org, "bob")
        remove = po.OrgRemove(rid=0, org=org, user=bob)
        assert await refused(w, "admin", remove) == ErrorCode.ENTERPRISE_ACCOUNT_BOUND
        assert await refused(w, "bob", po.OrgLeave(rid=0, org=org)) == (
            ErrorCode.ENTERPRISE_ACCOUNT_BOUND
        )
        # Permission comes first: a member without 'members' is refused as before.
        assert await refused(w, "alice", remove) == ErrorCode.FORBIDDEN
        # D6: another organisation's admin is told only that bob is not its member.
        assert (
            await refused(w, "other", po.OrgRemove(rid=0, org=other_org, user=bob))
            == ErrorCode.NOT_MEMBER
        )
        page: po.OrgMemberPage = await w.call("admin", po.OrgMembers(rid=0, org=org))
        assert bob in [m.user for m in page.members]
        mine: po.Memberships = await w.call("bob", po.OrgMine(rid=0))
        assert [m.org for m in mine.orgs] == [org]
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert not [e for e in audit.entries if e.action == "remove"]
        # What the error tells the admin to do works; an ordinary member is still removed.
        await w.call("admin", pe.OrgAccountStatus(rid=0, org=org, user=bob, status="cancelled"))
        assert await login_refused(w, org, "bob") == ErrorCode.ACCOUNT_DISABLED
        await w.call("admin", po.OrgRemove(rid=0, org=org, user=w.uid("alice")))
        assert (await w.call("alice", po.OrgMine(rid=0))).orgs == []


@pytest.mark.parametrize("store", STORES)
async def test_o3_unverified_single_chat_with_outsiders_is_refused_both_ways(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        await w.user("admin")
        await w.user("pat")  # a personal user: an outsider
        org = await verified_org(w, "admin", "Acme")
        bob = await account(w, "admin", org, "bob")
        await account(w, "admin", org, "eve")
        code = ErrorCode.VERIFICATION_REQUIRED
        assert await refused(w, "bob", text(direct(w, "bob", "pat"))) == code
        assert await refused(w, "pat", text(direct(w, "pat", "bob"))) == code
        # The admin is a personal account too: an outsider to bob.
        assert await refused(w, "admin", text(direct(w, "admin", "bob"))) == code
        inside = await w.direct("bob", "eve")
        assert inside == f"o:{org}:{direct(w, 'bob', 'eve')}"  # D2: the organisation's own
        await w.say("bob", inside, "inside the organisation")
        await w.say("bob", direct(w, "bob", "bob"), "a note to self")
        # The default verifier is the operator: an admin cannot verify on its own.
        verify = pe.OrgAccountVerifyPerson(rid=0, org=org, user=bob, verified=True)
        assert await refused(w, "admin", verify) == code
        if store == "sqlite":
            # The operator's command (the server runs meanwhile).
            args = argparse.Namespace(
                org_command="verify-person",
                data_dir=w.server.ctx.config.data_dir,
                org=org,
                account="bob",
                undo=False,
            )
            assert await cli_org.run(args) == 0
            # A running server notices within its cache lifetime; here at once.
            w.server.ctx.enterprise.invalidate(bob)
        else:
            yes = YesVerifier()
            w.server.ctx.enterprise.verifier = yes
            result: pe.AccountResult = await w.call("admin", verify)
            assert result.account.person_verified and yes.asked == [bob]
        await w.say("bob", direct(w, "bob", "pat"), "verified now")
        await w.say("pat", direct(w, "pat", "bob"), "hello bob")
        # The account itself removes its verification: refused again, both ways.
        mine: pe.AccountResult = await w.call("bob", pe.EnterpriseUnverifySelf(rid=0))
        assert not mine.account.person_verified
        assert await refused(w, "bob", text(direct(w, "bob", "pat"), cmid="c2")) == code
        assert await refused(w, "pat", text(direct(w, "pat", "bob"), cmid="c2")) == code


async def test_o3_contacts_and_groups_with_outsiders_need_verification(tmp_path: Path) -> None:
    async with open_world(tmp_path, "memory") as w:
        for name in ("admin", "pat", "quinn", "xadmin"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other = await verified_org(w, "xadmin", "Other")
        bob = await account(w, "admin", org, "bob")
        eve = await account(w, "admin", org, "eve")
        xena = await account(w, "xadmin", other, "xena")
        code = ErrorCode.VERIFICATION_REQUIRED
        pat = w.uid("pat")
        # Contacts, both directions; inside the organisation is fine.
        assert await refused(w, "bob", rq.ContactsAdd(rid=0, cmid="a", user_id=pat)) == code
        assert await refused(w, "pat", rq.ContactsAdd(rid=0, cmid="a", user_id=bob)) == code
        added: replies.Contact = await w.call("bob", rq.ContactsAdd(rid=0, cmid="a", user_id=eve))
        assert added.contact.state == "requested"
        # Another organisation's account is an outsider too.
        assert await refused(w, "bob", rq.ContactsAdd(rid=0, cmid="b", user_id=xena)) == code
        # Groups: creating with outsiders, either side creating.
        create = rq.GroupCreate(rid=0, cmid="g1", title="mixed", members=[pat])
        assert await refused(w, "bob", create) == code
        create = rq.GroupCreate(rid=0, cmid="g2", title="mixed", members=[bob])
        assert await refused(w, "pat", create) == code
        # Being added to a group with outsiders, and adding an outsider to its group.
        personal: replies.GroupCreated = await w.call(
            "pat", rq.GroupCreate(rid=0, cmid="g3", title="personal", members=[w.uid("quinn")])
        )
        add_bob = rq.GroupAdd(rid=0, conv=personal.conv.conv, users=[bob])
        assert await refused(w, "pat", add_bob) == code
        internal: replies.GroupCreated = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="g4", title="internal", members=[eve])
        )
        add_pat = rq.GroupAdd(rid=0, conv=internal.conv.conv, users=[pat])
        assert await refused(w, "eve", add_pat) == code
        # Once both are verified, the same steps work.
        for user in (bob, eve):
            await w.server.ctx.stores.orgs.set_person_verified(org, user, verified=True)
            w.server.ctx.enterprise.invalidate(user)
        await w.call("eve", add_pat)
        await w.call("pat", add_bob)
        await w.call("pat", rq.ContactsAdd(rid=0, cmid="c", user_id=bob))
        # An admin removes the verification: adding outsiders is refused again.
        await w.call("admin", pe.OrgAccountVerifyPerson(rid=0, org=org, user=eve, verified=False))
        add_quinn = rq.GroupAdd(rid=0, conv=internal.conv.conv, users=[w.uid("quinn")])
        assert await refused(w, "bob", add_quinn) == code
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert audit.entries[-1].action == "account.unverify_person"


async def test_o1_each_control_is_refused_with_its_own_code(tmp_path: Path) -> None:
    async with open_world(tmp_path, "memory") as w:
        for name in ("admin", "pat", "xadmin"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other = await verified_org(w, "xadmin", "Other")
        bob = await account(w, "admin", org, "bob")
        eve = await account(w, "admin", org, "eve")
        await w.server.ctx.stores.orgs.set_person_verified(org, bob, verified=True)
        w.server.ctx.enterprise.invalidate(bob)
        group: replies.GroupCreated = await w.call(
            "bob", rq.GroupCreate(rid=0, cmid="g", title="team", members=[eve])
        )
        conv = group.conv.conv
        await w.say("bob", direct(w, "bob", "pat"), "before any control")

        async def control(*names: pe.ControlName) -> None:
            await w.call(
                "admin", pe.OrgAccountControls(rid=0, org=org, user=bob, controls=[*names])
            )

        file = rq.Content(
            kind="file", file=rq.FileRef(ref="f1", name="a.pdf", mime="application/pdf", size=3)
        )
        cases: list[tuple[pe.ControlName, rq.Request, ErrorCode]] = [
            ("no_messages", text(conv, cmid="m1"), ErrorCode.MESSAGES_FORBIDDEN),
            (
                "no_files",
                rq.MsgSend(rid=0, conv=conv, cmid="m2", content=file),
                ErrorCode.FILES_FORBIDDEN,
            ),
            (
                "no_contacts",
                rq.ContactsAdd(rid=0, cmid="k", user_id=w.uid("pat")),
                ErrorCode.CONTACTS_FORBIDDEN,
            ),
            ("no_join_orgs", po.OrgApply(rid=0, org=other), ErrorCode.JOIN_ORGS_FORBIDDEN),
            (
                "no_ding",
                pd.DingSend(rid=0, cmid="d", recipients=[eve], text="now"),
                ErrorCode.DING_FORBIDDEN,
            ),
            ("no_live", pl.LiveStart(rid=0, conv=conv, title="live"), ErrorCode.LIVE_FORBIDDEN),
            (
                "no_external_chat",
                text(direct(w, "bob", "pat"), cmid="m3"),
                ErrorCode.EXTERNAL_CHAT_FORBIDDEN,
            ),
        ]
        for name, request, code in cases:
            await control(name)
            assert await refused(w, "bob", request) == code, name
        # Under no_external_chat, chat inside the organisation still works.
        await w.say("bob", await w.direct("bob", "eve"), "inside")
        await w.say("bob", conv, "team")
        await control()
        await w.say("bob", conv, "everything allowed again")
        # Login restriction, then freezing: the open connection closes.
        await control("no_login")
        assert await login_refused(w, org, "bob") == ErrorCode.LOGIN_RESTRICTED
        async with RivetClient.connect(w.url, w.users["bob"]) as b:
            await control("frozen")
            with trio.fail_after(5):
                await b.conn.closed.wait()
            assert b.conn.close_code == CloseCode.ACCOUNT_SUSPENDED
        assert await login_refused(w, org, "bob") == ErrorCode.ACCOUNT_FROZEN
        await control()
        w.users["bob"] = await login_enterprise(w, org, "bob")
        logins: pe.LoginRecords = await w.call(
            "admin", pe.OrgAccountLogins(rid=0, org=org, user=bob, limit=3)
        )
        assert [r.reason for r in logins.records] == ["", "frozen", "no_login"]
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org, limit=100))
        targets = [e.target for e in audit.entries if e.action == "account.controls"]
        assert f"user:{bob}:frozen" in targets and targets[-1] == f"user:{bob}:"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_d4_an_enterprise_accounts_messages_are_copied_without_consent(
    tmp_path: Path, store: str
) -> None:
    """D4 decision: an enterprise account's own data is its organisation's by definition;
    a personal member's is not, without consent. Neither reaches another organisation."""
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "member", "other_admin"):
            await w.user(name)
        org = await verified_org(w, "admin", "Acme")
        other = await w.create_org("other_admin", "Other")
        await w.join(org, "admin", "member")
        await account(w, "admin", org, "worker")
        # O3: talking to a personal user needs real-person verification (the operator's act).
        await w.server.ctx.stores.orgs.set_person_verified(org, w.uid("worker"), verified=True)
        w.server.ctx.enterprise.invalidate(w.uid("worker"))
        inside = direct(w, "worker", "admin")
        await w.say("worker", inside, "the account's words")
        await w.say("member", direct(w, "member", "admin"), "the member's words, no consent")
        await w.settle()
        assert await texts(w, "admin", org) == ["the account's words"]
        assert await texts(w, "other_admin", other) == []
