"""G2 for organisations over real WebSockets, on memory and SQLite: admins top up the
organisation's DING package (``org.ding_topup``, audit-logged) and read it with each
member's use (``org.ding_quota``); a DING sent in the organisation's context (``org``)
consumes it, an exhausted package is a ``quota_exhausted`` status while the in-app DING
still goes out; a non-member naming the organisation is refused; an enterprise account pays
through its own organisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from client import RivetClient
from protocol import ding as pd
from protocol import orgs as po
from protocol.errors import ErrorCode
from tests.e2e.orgs_world import World, open_world
from tests.e2e.test_enterprise import account, refused, verified_org

STORES = ["memory", "sqlite"]
SMS_NOW = pd.DingPlan(sms_after_s=0)
FINAL = frozenset({"sent", "failed", "cancelled", "quota_exhausted"})


def sms_state(ding: pd.DingInfo, user: int) -> str:
    (row,) = [r for r in ding.recipients if r.user_id == user]
    return [s.state for s in row.steps if s.channel == "sms"][-1]


async def settled(w: World, sender: str, ding_id: str) -> pd.DingInfo:
    """The DING once every recipient's SMS step reached a final state."""
    with trio.fail_after(10):
        while True:
            shown: pd.Ding = await w.call(sender, pd.DingGet(rid=0, ding_id=ding_id))
            if all(sms_state(shown.ding, r.user_id) in FINAL for r in shown.ding.recipients):
                return shown.ding
            await trio.sleep(0.05)


def package(quota: pd.DingQuota, channel: str) -> pd.DingPackage:
    (found,) = [p for p in quota.packages if p.channel == channel]
    return found


async def chat(w: World, a: str, b: str) -> None:
    """A single chat between ``a`` and ``b``: G1 needs a shared conversation."""
    await w.say(a, await w.direct(a, b), "hi")


@pytest.mark.parametrize("store", STORES)
async def test_g2_e2e_org_package_topped_up_consumed_per_member_and_exhausted(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "bob", "carol", "dave"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await w.join(org, "admin", "bob")
        await chat(w, "bob", "carol")
        await chat(w, "bob", "dave")
        topup = pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="sms", units=1)
        assert await refused(w, "bob", topup) == ErrorCode.FORBIDDEN  # a plain member
        topped: pd.DingQuota = await w.call("admin", topup)
        assert (package(topped, "sms").remaining, package(topped, "call").remaining) == (1, 0)
        audit: po.AuditPage = await w.call("admin", po.AdminAudit(rid=0, org=org))
        assert [(e.action, e.target, e.actor) for e in audit.entries][-1] == (
            "ding_topup",
            "ding:sms:1",
            w.uid("admin"),
        )

        recipients = [w.uid("carol"), w.uid("dave")]
        async with (
            RivetClient.connect(w.url, w.users["carol"]) as carol,
            RivetClient.connect(w.url, w.users["dave"]) as dave,
        ):
            sent: pd.DingSent = await w.call(
                "bob",
                pd.DingSend(
                    rid=0, cmid="o1", recipients=recipients, text="bridge", plan=SMS_NOW, org=org
                ),
            )
            for client in (carol, dave):  # the in-app DING reaches both
                with trio.fail_after(10):
                    while not isinstance(event := await client.next_event(), pd.DingEvent):
                        pass
                assert event.ding_id == sent.ding.ding_id
        ding = await settled(w, "bob", sent.ding.ding_id)
        assert sorted(sms_state(ding, u) for u in recipients) == ["quota_exhausted", "sent"]
        for row in ding.recipients:
            assert [s.state for s in row.steps if s.channel == "in_app"] == ["sent"]
        assert len([s for s in w.notifier.sms if s.text.endswith("bridge")]) == 1

        quota: pd.DingQuota = await w.call("admin", pd.OrgDingQuota(rid=0, org=org))
        sms = package(quota, "sms")
        assert (sms.granted, sms.used, sms.remaining) == (1, 1, 0)
        assert sms.members == [pd.DingMemberUse(user=w.uid("bob"), used=1)]
        assert await refused(w, "bob", pd.OrgDingQuota(rid=0, org=org)) == ErrorCode.FORBIDDEN


@pytest.mark.parametrize("store", STORES)
async def test_g2_e2e_a_non_member_naming_the_org_is_refused(tmp_path: Path, store: str) -> None:
    async with open_world(tmp_path, store) as w:
        for name in ("admin", "carol", "dave"):
            await w.user(name)
        org = await w.create_org("admin", "Acme")
        await chat(w, "carol", "dave")
        request = pd.DingSend(rid=0, cmid="n1", recipients=[w.uid("dave")], text="x", org=org)
        assert await refused(w, "carol", request) == ErrorCode.NOT_FOUND
        topup = pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="sms", units=1)
        assert await refused(w, "carol", topup) == ErrorCode.NOT_FOUND
        sent: pd.DingSent = await w.call(
            "carol", pd.DingSend(rid=0, cmid="n2", recipients=[w.uid("dave")], text="x")
        )
        assert sent.ding.state == "sent"  # without org: the personal allowance


@pytest.mark.parametrize("store", STORES)
async def test_g2_e2e_an_enterprise_account_pays_through_its_own_org(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        await w.user("admin")
        org = await verified_org(w, "admin", "Acme")
        other = await w.create_org("admin", "Elsewhere")
        ops = await account(w, "admin", org, "ops")
        dev = await account(w, "admin", org, "dev", phone="+15550000042")
        await chat(w, "ops", "dev")
        await w.call("admin", pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="sms", units=3))
        elsewhere = pd.DingSend(rid=0, cmid="e0", recipients=[dev], text="x", org=other)
        assert await refused(w, "ops", elsewhere) == ErrorCode.FORBIDDEN
        for cmid, named in (("e1", None), ("e2", org)):
            sent: pd.DingSent = await w.call(
                "ops",
                pd.DingSend(rid=0, cmid=cmid, recipients=[dev], text="x", plan=SMS_NOW, org=named),
            )
            assert sms_state(await settled(w, "ops", sent.ding.ding_id), dev) == "sent"
        assert [s.phone for s in w.notifier.sms] == ["+15550000042"] * 2  # G1: the contact phone
        quota: pd.DingQuota = await w.call("admin", pd.OrgDingQuota(rid=0, org=org))
        sms = package(quota, "sms")
        assert (sms.used, sms.remaining) == (2, 1)
        assert sms.members == [pd.DingMemberUse(user=ops, used=2)]
