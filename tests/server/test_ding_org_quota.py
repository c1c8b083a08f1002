"""G2 for organisations without a network: the payer a DING gets (``policy.ding_payer``),
the organisations' package ledger, and the ``org.ding_topup`` / ``org.ding_quota`` ops with
DINGs sent in an organisation's context, on the memory stores with trio's autojump clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from protocol import ding as pd
from protocol import orgs as po
from protocol.errors import ErrorCode, ProtocolError
from server import policy
from server.ding.quota import (
    PACKAGE_PERIOD,
    Ledgers,
    OrgPackages,
    PersonalAllowance,
    org_payer,
)
from storage.enterprise import EnterpriseAccount
from storage.orgs import OrgMember
from tests.server.test_ding import User, World, steps_of, world


def _member(org_id: int, user_id: int, *, left: bool = False) -> OrgMember:
    return OrgMember(org_id=org_id, user_id=user_id, role="member", left_at=1 if left else None)


def _account(org_id: int, user_id: int) -> EnterpriseAccount:
    return EnterpriseAccount(org_id=org_id, account="ops", user_id=user_id, password_hash="x")


def test_g2_payer_is_the_named_org_for_a_current_member_else_personal() -> None:
    assert policy.ding_payer(7, org=None, membership=None, account=None) == "user:7"
    assert policy.ding_payer(7, org=3, membership=_member(3, 7), account=None) == "org:3/user:7"
    for membership in (None, _member(3, 7, left=True), _member(4, 7)):
        with pytest.raises(ProtocolError) as refused:
            policy.ding_payer(7, org=3, membership=membership, account=None)
        assert refused.value.code == ErrorCode.NOT_FOUND
        assert refused.value.message == policy.org_not_found().message


def test_g2_an_enterprise_account_always_pays_through_its_own_org() -> None:
    account = _account(3, 9)
    assert policy.ding_payer(9, org=None, membership=None, account=account) == "org:3/user:9"
    assert policy.ding_payer(9, org=3, membership=None, account=account) == "org:3/user:9"
    with pytest.raises(ProtocolError) as refused:
        policy.ding_payer(9, org=4, membership=_member(4, 9), account=account)
    assert (refused.value.code, refused.value.path) == (ErrorCode.FORBIDDEN, "$.org")


def test_g2_the_package_needs_the_members_permission() -> None:
    admin = OrgMember(org_id=3, user_id=1, role="admin", permissions=frozenset({"members"}))
    assert policy.may_manage_ding_package(admin) is admin
    primary = OrgMember(org_id=3, user_id=2, role="primary")
    assert policy.may_manage_ding_package(primary) is primary
    with pytest.raises(ProtocolError) as refused:
        policy.may_manage_ding_package(_member(3, 7))
    assert refused.value.code == ErrorCode.FORBIDDEN
    for outsider in (None, _member(3, 7, left=True)):
        with pytest.raises(ProtocolError) as missing:
            policy.may_manage_ding_package(outsider)
        assert missing.value.code == ErrorCode.NOT_FOUND


def test_g2_org_payers_charge_the_package_per_member() -> None:
    ledger = Ledgers(personal=PersonalAllowance(sms=2, calls=1), packages=OrgPackages())
    charge = ledger.charge(payer=org_payer(3, 9), channel="call", now_ms=0)
    assert (charge.account, charge.channel, charge.period, charge.grant, charge.member) == (
        "org:3",
        "call",
        PACKAGE_PERIOD,
        0,
        9,
    )
    personal = ledger.charge(payer="user:9", channel="sms", now_ms=0)
    assert (personal.account, personal.grant, personal.member) == ("user:9", 2, 9)
    for payer, channel in (("org:3", "sms"), ("org:x/user:9", "sms"), (org_payer(3, 9), "in_app")):
        with pytest.raises(ValueError):
            ledger.charge(payer=payer, channel=channel, now_ms=0)  # type: ignore[arg-type]


# --- the ops ------------------------------------------------------------------------------------


async def _org_with(w: World, admin: User, *members: User) -> int:
    created = await w.ok(admin, po.OrgCreate(rid=0, name="Acme"))
    org: int = created["org"]["org"]
    for member in members:
        invited = await w.ok(admin, po.OrgInvite(rid=0, org=org, user=member.user_id))
        request_id = invited["request"]["request_id"]
        await w.ok(member, po.OrgAnswer(rid=0, org=org, request_id=request_id, accept=True))
    return org


def _package(quota: dict[str, Any], channel: str) -> dict[str, Any]:
    (found,) = [p for p in quota["packages"] if p["channel"] == channel]
    return found


async def test_g2_org_package_pays_per_member_and_exhausts_into_a_status(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ding_personal_sms_per_month=5) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        org = await _org_with(w, alice, bob)
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        await w.chat(bob, carol)
        empty = await w.ok(alice, pd.OrgDingQuota(rid=0, org=org))
        assert _package(empty, "sms") == {
            "channel": "sms",
            "granted": 0,
            "used": 0,
            "remaining": 0,
            "members": [],
        }
        topped = await w.ok(
            alice, pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="sms", units=2)
        )
        assert (_package(topped, "sms")["granted"], _package(topped, "call")["granted"]) == (2, 0)

        sms_now = pd.DingPlan(sms_after_s=0)
        first = await w.ding(bob, carol, org=org, plan=sms_now)
        await trio.sleep(1)
        assert steps_of(await w.get(bob, first["ding_id"]), carol)["sms"] == "sent"
        second = await w.ding(alice, bob, carol, org=org, plan=sms_now)
        await trio.sleep(1)
        shown = await w.get(alice, second["ding_id"])
        assert sorted(steps_of(shown, u)["sms"] for u in (bob, carol)) == [
            "quota_exhausted",
            "sent",
        ]
        for user in (bob, carol):  # the in-app DING went out to both
            assert steps_of(shown, user)["in_app"] == "sent"
        assert [e["ding_id"] for e in w.events(carol, "ev.ding")] == [
            first["ding_id"],
            second["ding_id"],
        ]
        assert len(w.notifier.sms) == 2

        quota = await w.ok(alice, pd.OrgDingQuota(rid=0, org=org))
        assert _package(quota, "sms") == {
            "channel": "sms",
            "granted": 2,
            "used": 2,
            "remaining": 0,
            "members": [
                {"user": u.user_id, "used": 1}
                for u in sorted((alice, bob), key=lambda u: u.user_id)
            ],
        }
        # The personal allowances were not touched.
        period = PersonalAllowance(sms=5, calls=0).period(w.ctx.clock.now_ms())
        for user in (alice, bob):
            assert (
                await w.ctx.stores.ding.quota_balance(f"user:{user.user_id}", "sms", period) is None
            )
        audit = await w.ok(alice, po.AdminAudit(rid=0, org=org))
        assert [(e["action"], e["target"]) for e in audit["entries"]][-1] == (
            "ding_topup",
            "ding:sms:2",
        )


async def test_g2_naming_an_org_needs_a_current_membership(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        org = await _org_with(w, alice)
        await w.chat(carol, bob)
        request = pd.DingSend(rid=0, cmid="c1", recipients=[bob.user_id], text="hi", org=org)
        refused = await w.call(carol, request)
        assert refused["code"] == ErrorCode.NOT_FOUND
        missing = await w.call(carol, pd.DingSend(**{**_fields(request), "org": org + 100}))
        assert (missing["code"], missing["message"]) == (refused["code"], refused["message"])
        assert w.events(bob, "ev.ding") == []
        sent = await w.ding(carol, bob)  # personal, without org: fine
        assert sent["state"] == "sent"


async def test_g2_topping_up_and_reading_the_package_need_the_permission(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        org = await _org_with(w, alice, bob)
        topup = pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="call", units=5)
        assert (await w.call(bob, topup))["code"] == ErrorCode.FORBIDDEN
        assert (await w.call(bob, pd.OrgDingQuota(rid=0, org=org)))["code"] == ErrorCode.FORBIDDEN
        assert (await w.call(carol, topup))["code"] == ErrorCode.NOT_FOUND
        await w.ok(
            alice,
            po.OrgSetAdmin(rid=0, org=org, user=bob.user_id, role="admin", permissions=["members"]),
        )
        quota = await w.ok(bob, topup)
        assert _package(quota, "call")["remaining"] == 5


def _fields(request: pd.DingSend) -> dict[str, Any]:
    return {f: getattr(request, f) for f in request.__struct_fields__}


async def test_g2_a_resent_topup_adds_once_and_a_reused_cmid_conflicts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """G2, P3: ``org.ding_topup`` is idempotent by ``cmid`` (a reply lost, the client
    resends): the package grows once, the audit log has one entry, and the resend answers
    like the first. The same ``cmid`` for another top-up is ``idempotency_conflict``."""
    async with world(tmp_path) as w:
        alice, bob = [await w.new_user(n) for n in ("Alice", "Bob")]
        org = await _org_with(w, alice, bob)
        topup = pd.OrgDingTopup(rid=0, cmid="buy-1", org=org, channel="sms", units=7)
        first = await w.ok(alice, topup)
        again = await w.ok(alice, topup)
        assert again == first and _package(again, "sms")["granted"] == 7
        quota = await w.ok(alice, pd.OrgDingQuota(rid=0, org=org))
        assert _package(quota, "sms")["granted"] == 7
        audit = await w.ok(alice, po.AdminAudit(rid=0, org=org))
        assert [e["target"] for e in audit["entries"] if e["action"] == "ding_topup"] == [
            "ding:sms:7"
        ]
        for changed in (
            {"units": 8},
            {"channel": "call"},
            {"org": (await w.ok(alice, po.OrgCreate(rid=0, name="Other")))["org"]["org"]},
        ):
            conflict = await w.call(alice, msgspec.structs.replace(topup, **changed))
            assert conflict["code"] == ErrorCode.IDEMPOTENCY_CONFLICT, changed
        # A new cmid is a new top-up; another admin's cmid is their own.
        second = await w.ok(alice, msgspec.structs.replace(topup, cmid="buy-2"))
        assert _package(second, "sms")["granted"] == 14
        await w.ok(
            alice,
            po.OrgSetAdmin(rid=0, org=org, user=bob.user_id, role="admin", permissions=["members"]),
        )
        by_bob = await w.ok(bob, topup)
        assert _package(by_bob, "sms")["granted"] == 21
        quota = await w.ok(alice, pd.OrgDingQuota(rid=0, org=org))
        assert (_package(quota, "sms")["granted"], _package(quota, "call")["granted"]) == (21, 0)
