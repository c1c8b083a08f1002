"""D2 for DINGs over real WebSockets, on memory and SQLite: a DING among one organisation's
enterprise accounts is that organisation's (id ``o<org>:<n>``, kept in the organisation DING
store), its recipients get it and confirm it (no SMS after the confirm), its SMS is paid by
the organisation's package kept in the organisation store (G2), the lists show it, and
dissolving the organisation (O4) deletes it with the package. Its SMS and calls go to the
contact phone the admins set (G1 with P5); without one they fail, refunded, unsent."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from client import RivetClient
from protocol import ding as pd
from protocol import enterprise as pe
from tests.e2e.orgs_world import World, open_world
from tests.e2e.test_ding_org_quota import SMS_NOW, chat, package, settled, sms_state
from tests.e2e.test_enterprise import account, verified_org

STORES = ["memory", "sqlite"]


async def _ding_event(client: RivetClient) -> pd.DingEvent:
    with trio.fail_after(10):
        while not isinstance(event := await client.next_event(), pd.DingEvent):
            pass
    return event


def _advance(w: World, ms: int) -> None:
    w.clock.advance(ms)
    w.server.ctx.ding.scheduler.poke()


@pytest.mark.parametrize("store", STORES)
async def test_d2_e2e_an_org_internal_ding_lives_in_the_org_store(
    tmp_path: Path, store: str
) -> None:
    async with open_world(tmp_path, store) as w:
        await w.user("admin")
        org = await verified_org(w, "admin", "Acme")
        ops = await account(w, "admin", org, "ops")
        dev = await account(w, "admin", org, "dev", phone="+15550000077")
        await chat(w, "ops", "dev")
        await w.call("admin", pd.OrgDingTopup(rid=0, cmid="t1", org=org, channel="sms", units=5))
        stores = w.server.ctx.stores

        async with RivetClient.connect(w.url, w.users["dev"]) as dev_client:
            later = pd.DingPlan(sms_after_s=60)
            first: pd.DingSent = await w.call(
                "ops", pd.DingSend(rid=0, cmid="a", recipients=[dev], text="pager", plan=later)
            )
            ding_id = first.ding.ding_id
            assert ding_id.startswith(f"o{org}:")
            assert (await _ding_event(dev_client)).ding_id == ding_id
            confirmed: pd.Ding = await dev_client.request(pd.DingConfirm(rid=0, ding_id=ding_id))
            assert sms_state(confirmed.ding, dev) == "cancelled"
        _advance(w, 61_000)
        await trio.sleep(0.2)
        assert w.notifier.sms == []  # G1: confirmed before the SMS, none goes out

        now: pd.DingSent = await w.call(
            "ops", pd.DingSend(rid=0, cmid="b", recipients=[dev], text="now", plan=SMS_NOW)
        )
        assert sms_state(await settled(w, "ops", now.ding.ding_id), dev) == "sent"
        (sms,) = w.notifier.sms
        # G1 with P5: to dev's contact phone, which its admin set, never the placeholder.
        assert sms.phone == "+15550000077"
        assert sms.idempotency_key.startswith(f"rivet-ding-o{pd.ding_number(now.ding.ding_id)}-")
        # G2: the package, in the organisation store, paid for it, recorded against ops.
        quota: pd.DingQuota = await w.call("admin", pd.OrgDingQuota(rid=0, org=org))
        assert (package(quota, "sms").used, package(quota, "sms").members) == (
            1,
            [pd.DingMemberUse(user=ops, used=1)],
        )
        kept = await stores.org_ding.quota_balance(f"org:{org}", "sms", "package")
        assert kept is not None and kept.used == 1
        assert await stores.ding.quota_balance(f"org:{org}", "sms", "package") is None
        # The lists (merged over both stores) show them, newest first.
        listed: pd.DingPage = await w.call("ops", pd.DingListSent(rid=0, limit=1))
        assert [d.ding_id for d in listed.dings] == [now.ding.ding_id]
        rest: pd.DingPage = await w.call("ops", pd.DingListSent(rid=0, before=listed.next_before))
        assert [d.ding_id for d in rest.dings] == [ding_id]
        received: pd.DingPage = await w.call("dev", pd.DingListReceived(rid=0))
        assert [d.ding_id for d in received.dings] == [now.ding.ding_id, ding_id]

        # O4: dissolving the organisation deletes its DINGs and its package.
        await w.dissolve("admin", org)
        for gone in (ding_id, now.ding.ding_id):
            assert await stores.org_ding.get(pd.ding_number(gone)) is None
        assert await stores.org_ding.quota_balance(f"org:{org}", "sms", "package") is None


@pytest.mark.parametrize("store", STORES)
async def test_g1_p5_e2e_no_contact_phone_fails_the_steps_and_refunds_the_package(
    tmp_path: Path, store: str
) -> None:
    """G1/G2 with P5: an enterprise account without a contact phone has no number to dial
    (its user row's phone is the placeholder ``ent:<org>:<account>``): its SMS and call
    steps fail at once, nothing reaches the Notifier, and the package gets its units back.
    With a contact phone set by an admin, the next SMS goes there."""
    async with open_world(tmp_path, store) as w:
        await w.user("admin")
        org = await verified_org(w, "admin", "Acme")
        await account(w, "admin", org, "ops")
        bare = await account(w, "admin", org, "bare")
        await chat(w, "ops", "bare")
        for channel in ("sms", "call"):
            topup = pd.OrgDingTopup(rid=0, cmid=channel, org=org, channel=channel, units=3)
            await w.call("admin", topup)
        at_once = pd.DingPlan(sms_after_s=0, call_after_s=0)
        sent: pd.DingSent = await w.call(
            "ops", pd.DingSend(rid=0, cmid="a", recipients=[bare], text="pager", plan=at_once)
        )
        ding = await settled(w, "ops", sent.ding.ding_id)
        (row,) = ding.recipients
        with trio.fail_after(10):
            while [s.state for s in row.steps if s.channel == "call"] != ["failed"]:
                await trio.sleep(0.05)
                shown: pd.Ding = await w.call("ops", pd.DingGet(rid=0, ding_id=ding.ding_id))
                (row,) = shown.ding.recipients
        assert {s.channel: s.state for s in row.steps} == {
            "in_app": "sent",
            "sms": "failed",
            "call": "failed",
        }
        assert w.notifier.sms == [] and w.notifier.calls == []
        with trio.fail_after(10):  # the refunds run in the background; bounded wait
            while True:
                quota: pd.DingQuota = await w.call("admin", pd.OrgDingQuota(rid=0, org=org))
                if package(quota, "sms").used == package(quota, "call").used == 0:
                    break
                await trio.sleep(0.05)
        await w.call("admin", pe.OrgAccountPhone(rid=0, org=org, user=bare, phone="+4930777"))
        again: pd.DingSent = await w.call(
            "ops", pd.DingSend(rid=0, cmid="b", recipients=[bare], text="again", plan=SMS_NOW)
        )
        assert sms_state(await settled(w, "ops", again.ding.ding_id), bare) == "sent"
        assert [s.phone for s in w.notifier.sms] == ["+4930777"]
