"""D2/D3 and G2 for DINGs without a network, on the memory stores with trio's autojump
clock: a DING among one organisation's enterprise accounts is that organisation's (kept in
the organisation DING store, id ``o<org>:<n>``) and works end to end; any other DING stays
cross-domain; the organisation's package lives in the organisation store and pays for both
its internal DINGs and cross-domain DINGs sent in its context, once per step even across a
crash between the charge and the hand-over; dissolving the organisation (O4) removes its
DINGs and its package, and their timers fire into nothing. An enterprise account's SMS and
calls go to the contact phone its admins set (G1 with P5), never to its user row's
placeholder; without one its SMS and call steps fail at once, refunded, and nothing reaches
the Notifier."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocol import ding as pd
from protocol import enterprise as pe
from protocol import orgs as po
from protocol import requests as rq
from protocol.ids import org_direct_conversation_id
from server import policy
from server.dissolution import Dissolver
from storage.ding_records import charge_key
from storage.enterprise import EnterpriseAccount, placeholder_phone
from tests.server.routers import connect
from tests.server.test_ding import User, World, steps_of, world

PASSWORD = "correct horse battery"
SMS_NOW = pd.DingPlan(sms_after_s=0)
_names = itertools.count(1)
_contact_phones = itertools.count(1)


def _account(org_id: int, user_id: int) -> EnterpriseAccount:
    return EnterpriseAccount(org_id=org_id, account="a", user_id=user_id, password_hash="x")


def test_d2_placement_rule_for_dings() -> None:
    """D2/D3: the organisation's only if the sender and every recipient are its accounts."""
    accounts = {1: _account(5, 1), 2: _account(5, 2), 3: _account(6, 3), 4: None}
    assert policy.ding_store_for(sender=1, recipients=[2], accounts=accounts) == 5
    assert policy.ding_store_for(sender=1, recipients=[2, 3], accounts=accounts) is None
    assert policy.ding_store_for(sender=1, recipients=[4], accounts=accounts) is None
    assert policy.ding_store_for(sender=4, recipients=[1], accounts=accounts) is None
    assert policy.ding_store_for(sender=3, recipients=[1], accounts=accounts) is None


def test_d2_ding_ids_and_cursors_name_their_store() -> None:
    assert pd.ding_id(12) == "x:12" and pd.ding_id(12, 7) == "o7:12"
    assert pd.parse_ding_id("x:12") == (None, 12) and pd.parse_ding_id("o7:12") == (7, 12)
    for bad in ("y:1", "o:1", "ox:1", "x:"):
        with pytest.raises(ValueError):
            pd.parse_ding_id(bad)
    assert pd.parse_ding_cursor("x:5,o:9") == {"x": 5, "o": 9}
    assert pd.parse_ding_cursor("o:9") == {"o": 9}
    assert pd.ding_cursor({"o": 9, "x": 5}) == "x:5,o:9"


async def _org(w: World, admin: User) -> int:
    created = await w.ok(admin, po.OrgCreate(rid=0, name=f"Acme{next(_names)}"))
    org: int = created["org"]["org"]
    await w.ctx.stores.orgs.set_verified(org, verified=True, now=w.ctx.clock.now_ms())
    return org


async def _account_user(
    w: World, admin: User, org: int, name: str, *, contact: bool = True
) -> User:
    """P5: an enterprise account created by ``admin`` and logged in on its own connection,
    with a contact phone for its DING SMS and calls (G1) unless ``contact`` is false (then
    ``phone`` is its user row's placeholder, which nothing may ever be sent to)."""
    phone = f"+1777{next(_contact_phones):07d}" if contact else None
    create = pe.OrgAccountCreate(rid=0, org=org, account=name, password=PASSWORD, phone=phone)
    await w.ok(admin, create)
    conn = connect(4096)
    user = User(user_id=0, conn=conn, phone=phone or placeholder_phone(org, name))
    await w.ok(user, rq.Hello(rid=0, version=1))
    tokens = await w.ok(user, pe.LoginEnterprise(rid=0, org=org, account=name, password=PASSWORD))
    user.user_id = tokens["session"]["user_id"]
    w.ctx.hub.attach(conn)
    return user


async def _internal_chat(w: World, org: int, a: User, b: User) -> None:
    conv = org_direct_conversation_id(org, a.user_id, b.user_id)
    await w.ok(a, rq.MsgSend(rid=0, conv=conv, cmid=f"i{b.user_id}", content=rq.Content(text="hi")))


async def _topup(w: World, admin: User, org: int, units: int, cmid: str = "t1") -> None:
    await w.ok(admin, pd.OrgDingTopup(rid=0, cmid=cmid, org=org, channel="sms", units=units))


async def _sms_package(w: World, admin: User, org: int) -> dict[str, Any]:
    quota = await w.ok(admin, pd.OrgDingQuota(rid=0, org=org))
    (sms,) = [p for p in quota["packages"] if p["channel"] == "sms"]
    return sms  # type: ignore[no-any-return]


async def _scene(w: World) -> tuple[User, int, User, User]:
    admin = await w.new_user("Admin")
    org = await _org(w, admin)
    ops = await _account_user(w, admin, org, "ops")
    dev = await _account_user(w, admin, org, "dev")
    await _internal_chat(w, org, ops, dev)
    return admin, org, ops, dev


async def test_d2_an_org_internal_ding_lives_in_the_org_store_end_to_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """D2 with G1/G3: send, confirm stops escalation, re-DING, and the lists."""
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        qa = await _account_user(w, admin, org, "qa")
        await _internal_chat(w, org, ops, qa)
        await _topup(w, admin, org, 10)
        plan = pd.DingPlan(sms_after_s=60, call_after_s=180)
        ding = await w.ding(ops, dev, qa, plan=plan)
        ding_id = ding["ding_id"]
        assert ding_id.startswith(f"o{org}:")
        number = pd.ding_number(ding_id)
        # Kept in the organisation DING store, not the cross-domain one.
        assert await w.ctx.stores.org_ding.get(number) is not None
        assert await w.ctx.stores.ding.list_sent(ops.user_id, before=None, limit=5) == []
        (event,) = w.events(dev, "ev.ding")
        assert event["ding_id"] == ding_id
        # dev confirms before the SMS: none of dev's steps ever starts.
        confirmed = await w.ok(dev, pd.DingConfirm(rid=0, ding_id=ding_id))
        assert steps_of(confirmed["ding"], dev) == {
            "in_app": "sent",
            "sms": "cancelled",
            "call": "cancelled",
        }
        await trio.sleep(61)
        shown = await w.get(ops, ding_id)
        assert steps_of(shown, qa)["sms"] == "sent"
        (sms,) = w.notifier.sms
        # G1 with P5: to the contact phone the admin set, not the placeholder.
        assert sms.phone == qa.phone and qa.phone.startswith("+1777")
        assert sms.idempotency_key.startswith(f"rivet-ding-o{number}-s")
        await trio.sleep(300)  # past the re-DING interval (and the call)
        again = await w.ok(ops, pd.DingRedding(rid=0, ding_id=ding_id))
        assert again["ding"]["round"] == 2
        assert steps_of(again["ding"], qa)["sms"] == "scheduled"
        assert [r["user_id"] for r in again["ding"]["recipients"]] == sorted(
            [dev.user_id, qa.user_id]
        )
        # The package paid for qa's SMS and call (org store), per member.
        package = await _sms_package(w, admin, org)
        assert (package["used"], package["members"]) == (1, [{"user": ops.user_id, "used": 1}])
        # Someone who is neither sender nor recipient, or the id under another organisation,
        # finds no DING.
        assert (await w.call(admin, pd.DingGet(rid=0, ding_id=ding_id)))["op"] == "error"
        wrong = pd.ding_id(number, org + 1)
        assert (await w.call(ops, pd.DingGet(rid=0, ding_id=wrong)))["op"] == "error"
        assert (await w.call(ops, pd.DingGet(rid=0, ding_id=f"x:{number}")))["op"] == "error"


async def test_d3_a_ding_between_an_enterprise_account_and_an_outsider_is_cross_domain(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        # O3: the account needs real-person verification to chat with an outsider.
        await w.ctx.stores.orgs.set_person_verified(org, ops.user_id, verified=True)
        w.ctx.enterprise.invalidate(ops.user_id)
        await w.chat(admin, ops)
        outward = await w.ding(ops, admin)
        assert outward["ding_id"].startswith("x:")
        inward = await w.ding(admin, ops)
        assert inward["ding_id"].startswith("x:")
        mixed = await w.ding(ops, dev, admin)  # one outsider among the recipients
        assert mixed["ding_id"].startswith("x:")
        assert len(await w.ctx.stores.ding.list_sent(ops.user_id, before=None, limit=9)) == 2
        assert await w.ctx.stores.org_ding.list_sent(ops.user_id, before=None, limit=9) == []


async def test_d2_lists_merge_both_stores_newest_first_with_one_cursor(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        await w.ctx.stores.orgs.set_person_verified(org, ops.user_id, verified=True)
        w.ctx.enterprise.invalidate(ops.user_id)
        await w.chat(admin, ops)
        sent = []
        for i in range(7):  # alternate stores, one per second
            recipient = dev if i % 3 else admin
            sent.append((await w.ding(ops, recipient, plan=pd.DingPlan()))["ding_id"])
            await trio.sleep(1)
        assert {s[0] for s in sent} == {"x", "o"}
        listed: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await w.ok(ops, pd.DingListSent(rid=0, before=cursor, limit=3))
            listed += [d["ding_id"] for d in page["dings"]]
            pages += 1
            cursor = page["next_before"]
            if cursor is None:
                break
        assert listed == sent[::-1] and pages == 3
        # The recipient's list in the organisation store alone, same paging.
        received = await w.ok(dev, pd.DingListReceived(rid=0, limit=2))
        assert [d["ding_id"] for d in received["dings"]] == [s for s in sent[::-1] if s[0] == "o"][
            :2
        ]
        rest = await w.ok(dev, pd.DingListReceived(rid=0, before=received["next_before"]))
        assert len(received["dings"]) + len(rest["dings"]) == sum(s[0] == "o" for s in sent)


async def test_g2_org_internal_and_org_paid_cross_domain_dings_share_the_package(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        outsider = await w.new_user("Out")
        await w.chat(admin, outsider)
        # The package lives in the organisation store (D2), not in cross.db.
        await _topup(w, admin, org, 2)
        balance = await w.ctx.stores.org_ding.quota_balance(f"org:{org}", "sms", "package")
        assert balance is not None and balance.granted == 2
        assert await w.ctx.stores.ding.quota_balance(f"org:{org}", "sms", "package") is None
        internal = await w.ding(ops, dev, plan=SMS_NOW)  # org-internal, paid by the package
        crossing = await w.ding(admin, outsider, plan=SMS_NOW, org=org)  # cross, org pays
        assert internal["ding_id"].startswith("o") and crossing["ding_id"].startswith("x:")
        await trio.sleep(1)
        assert steps_of(await w.get(ops, internal["ding_id"]), dev)["sms"] == "sent"
        assert steps_of(await w.get(admin, crossing["ding_id"]), outsider)["sms"] == "sent"
        package = await _sms_package(w, admin, org)
        assert (package["granted"], package["used"], package["remaining"]) == (2, 2, 0)
        assert package["members"] == sorted(
            [{"user": ops.user_id, "used": 1}, {"user": admin.user_id, "used": 1}],
            key=lambda m: m["user"],
        )
        # Used up: the next one is a clear status on that recipient and channel, and the
        # in-app DING still went out.
        third = await w.ding(admin, outsider, plan=SMS_NOW, org=org)
        await trio.sleep(1)
        assert steps_of(await w.get(admin, third["ding_id"]), outsider) == {
            "in_app": "sent",
            "sms": "quota_exhausted",
        }


async def test_g2_a_crash_between_the_charge_and_the_hand_over_charges_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The charge of a cross-domain DING paid by the organisation is in the organisation's
    database, its step in cross.db. The charge commits, the process dies before the
    hand-over: the step fires again, the charge answers its recorded outcome, and the step
    is handed over once, with one unit used."""
    async with world(tmp_path) as w:
        admin = await w.new_user("Admin")
        org = await _org(w, admin)
        outsider = await w.new_user("Out")
        await w.chat(admin, outsider)
        await _topup(w, admin, org, 5)
        runtime = w.ctx.ding
        second = await w.ding(admin, outsider, plan=pd.DingPlan(sms_after_s=600), org=org)
        stored = await runtime.store.get(pd.ding_number(second["ding_id"]))
        assert stored is not None
        (sms,) = [s for r in stored.recipients for s in r.steps if s.channel == "sms"]
        # The first half, by hand (the pieces the runtime's timer calls), then "the crash".
        charged = await runtime.charge("cross", runtime.store, [sms])
        assert charged[sms.step_id].outcome == "paid"
        assert (await _sms_package(w, admin, org))["used"] == 1
        # The re-fire after the restart: the charge is recorded, nothing more is taken.
        await runtime.fire([("cross", sms.step_id)])
        await runtime.fire([("cross", sms.step_id)])  # a timer that fires twice
        assert (await _sms_package(w, admin, org))["used"] == 1
        org_store = w.ctx.stores.org_ding
        key = charge_key("cross", sms.step_id)
        assert await org_store.charge_step(key, charged[sms.step_id].charge, now=0) == "paid"
        await trio.sleep(601)  # the step's own timer fires too: nothing more happens
        assert steps_of(await w.get(admin, second["ding_id"]), outsider)["sms"] == "sent"
        assert len([s for s in w.notifier.sms if s.phone == outsider.phone]) == 1
        assert (await _sms_package(w, admin, org))["used"] == 1


async def test_g2_a_confirm_after_the_charge_gives_the_unit_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Charged in the organisation's database, then the recipient confirms before the
    hand-over: the step is cancelled and the unit comes back (a refund owed in cross.db,
    carried out in the organisation's database)."""
    async with world(tmp_path) as w:
        admin = await w.new_user("Admin")
        org = await _org(w, admin)
        outsider = await w.new_user("Out")
        await w.chat(admin, outsider)
        await _topup(w, admin, org, 5)
        runtime = w.ctx.ding
        ding = await w.ding(admin, outsider, plan=pd.DingPlan(sms_after_s=600), org=org)
        stored = await runtime.store.get(pd.ding_number(ding["ding_id"]))
        assert stored is not None
        (sms,) = [s for r in stored.recipients for s in r.steps if s.channel == "sms"]
        # The race, piece by piece: the timer read the step and charged it; the confirm
        # commits; then the hand-over finds the step cancelled.
        charged = await runtime.charge("cross", runtime.store, [sms])
        assert charged[sms.step_id].outcome == "paid"
        assert (await _sms_package(w, admin, org))["used"] == 1
        await w.ok(outsider, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        now = w.ctx.clock.now_ms()
        handed = await runtime.store.hand_over([sms.step_id], now=now, charged=charged)
        assert handed.changed == ()
        assert await runtime.settle_refunds() == 1
        assert await runtime.settle_refunds() == 0  # carried out once
        assert (await _sms_package(w, admin, org))["used"] == 0
        assert steps_of(await w.get(admin, ding["ding_id"]), outsider)["sms"] == "cancelled"
        assert w.notifier.sms == []


async def _used(w: World, admin: User, org: int) -> dict[str, int]:
    quota = await w.ok(admin, pd.OrgDingQuota(rid=0, org=org))
    return {p["channel"]: p["used"] for p in quota["packages"]}


async def test_g1_p5_an_account_without_a_contact_phone_is_never_sent_to_and_refunded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """G1/G2 with P5: an enterprise account's user row holds only a placeholder phone. With
    no contact phone set, its SMS and call steps fail at once, nothing for it reaches the
    Notifier, and the package gets its units back; once an admin sets one, they go there."""
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        bare = await _account_user(w, admin, org, "bare", contact=False)
        await _internal_chat(w, org, ops, bare)
        await _topup(w, admin, org, 10)
        await w.ok(admin, pd.OrgDingTopup(rid=0, cmid="t2", org=org, channel="call", units=10))
        at_once = pd.DingPlan(sms_after_s=0, call_after_s=0)
        ding = await w.ding(ops, dev, bare, plan=at_once)
        await trio.sleep(1)
        shown = await w.get(ops, ding["ding_id"])
        assert steps_of(shown, bare) == {"in_app": "sent", "sms": "failed", "call": "failed"}
        assert steps_of(shown, dev) == {"in_app": "sent", "sms": "sent", "call": "sent"}
        # Only dev's SMS and call reached the Notifier (one SMS attempt in all).
        assert [s.phone for s in w.notifier.sms] == [dev.phone]
        assert [c.phone for c in w.notifier.calls] == [dev.phone]
        assert len(w.notifier.attempts) == 1
        assert w.ctx.ding.refunded == 2
        assert await _used(w, admin, org) == {"sms": 1, "call": 1}  # bare's units came back
        # The admin sets a contact phone: the next DING's SMS goes to it at once (no cache),
        # and the user row keeps its placeholder (never a login identifier).
        await w.ok(admin, pe.OrgAccountPhone(rid=0, org=org, user=bare.user_id, phone="+4930123"))
        again = await w.ding(ops, bare, plan=SMS_NOW)
        await trio.sleep(1)
        assert steps_of(await w.get(ops, again["ding_id"]), bare)["sms"] == "sent"
        assert [s.phone for s in w.notifier.sms] == [dev.phone, "+4930123"]
        row = await w.ctx.stores.personal.get_user(bare.user_id)
        assert row is not None and row.phone == placeholder_phone(org, "bare")


async def test_g2_p5_no_contact_phone_refunds_cross_domain_payers_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The no-number rule on cross-domain DINGs (cross.db): paid by the organisation's
    package (charged in the organisation's database) or by a personal allowance; each unit
    comes back, and the placeholder never reaches the Notifier."""
    async with world(tmp_path) as w:
        admin, org, _ops, _dev = await _scene(w)
        bare = await _account_user(w, admin, org, "bare", contact=False)
        # O3: the account needs real-person verification to chat with an outsider.
        await w.ctx.stores.orgs.set_person_verified(org, bare.user_id, verified=True)
        w.ctx.enterprise.invalidate(bare.user_id)
        await w.chat(admin, bare)
        await _topup(w, admin, org, 5)
        paid_by_org = await w.ding(admin, bare, plan=SMS_NOW, org=org)
        personal = await w.ding(admin, bare, plan=pd.DingPlan(call_after_s=0))
        assert paid_by_org["ding_id"].startswith("x:") and personal["ding_id"].startswith("x:")
        await trio.sleep(1)
        assert steps_of(await w.get(admin, paid_by_org["ding_id"]), bare)["sms"] == "failed"
        assert steps_of(await w.get(admin, personal["ding_id"]), bare)["call"] == "failed"
        assert w.notifier.sms == [] and w.notifier.calls == [] and w.notifier.attempts == []
        assert w.ctx.ding.refunded == 2
        assert (await _sms_package(w, admin, org))["used"] == 0
        charge = w.ctx.ding.ledger.charge(
            payer=f"user:{admin.user_id}", channel="call", now_ms=w.ctx.clock.now_ms()
        )
        allowance = await w.ctx.stores.ding.quota_balance(charge.account, "call", charge.period)
        assert allowance is not None and allowance.used == 0


async def test_o4_dissolution_removes_the_orgs_dings_and_package(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        admin, org, ops, dev = await _scene(w)
        await _topup(w, admin, org, 3)
        pending = await w.ding(ops, dev, plan=pd.DingPlan(sms_after_s=600))
        done = await w.ding(ops, dev, plan=SMS_NOW)
        await trio.sleep(1)
        outsider = await w.new_user("Out")
        await w.chat(admin, outsider)
        crossing = await w.ding(admin, outsider, plan=pd.DingPlan(sms_after_s=600), org=org)
        store = w.ctx.stores.org_ding
        assert await store.get(pd.ding_number(pending["ding_id"])) is not None
        summary = await w.ok(admin, po.OrgDissolve(rid=0, org=org))
        await w.ok(admin, po.OrgDissolveConfirm(rid=0, org=org, token=summary["token"]))
        # From the confirmation on, the organisation's DINGs are gone for every path.
        assert (await w.call(ops, pd.DingGet(rid=0, ding_id=done["ding_id"])))["op"] == "error"
        dissolver = Dissolver(w.ctx.stores.orgs, dings=store, chunk=1)
        await dissolver.finish_all()
        for ding in (pending, done):
            assert await store.get(pd.ding_number(ding["ding_id"])) is None
        assert await store.quota_balance(f"org:{org}", "sms", "package") is None
        assert dissolver.chunks >= 3  # chunked
        # The pending step's timer still fires: a harmless no-op. The cross-domain DING the
        # organisation paid for stays with its participants; its SMS, now unpaid, is a clear
        # status.
        sent_before = len(w.notifier.sms)
        await trio.sleep(601)
        assert len(w.notifier.sms) == sent_before
        assert steps_of(await w.get(admin, crossing["ding_id"]), outsider)["sms"] == (
            "quota_exhausted"
        )
        assert await store.quota_balance(f"org:{org}", "sms", "package") is None
