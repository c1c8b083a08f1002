"""A3 with A1 and O4: erasing an account and dissolving an organisation destroy their keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trio

from protocol.requests import Content
from server.account_deletion import AccountEraser
from server.clock import ManualClock
from server.ding.relay import OutboxRelay as DingRelay
from server.dissolution import Dissolver
from server.encryption import org_keys_destroyer
from server.notify.memory import MemoryNotifier
from server.org_feed import OrgFeeds
from server.outbox import OutboxRelay, org_copy_effect
from storage.crypto import MasterKey
from storage.ding_records import NewDing, NewStep, QuotaCharge, StepChange
from storage.keys import org_owner, user_owner
from storage.memory import open_memory_stores
from storage.orgs import NewCopy
from storage.records import Entry, NewConversation, NewEntry
from storage.sealing import seal_stores
from storage.sqlite import open_sqlite_stores
from storage.stores import Stores
from tests.ding_steps import hand_over


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        async with open_memory_stores() as opened:
            yield seal_stores(opened, MasterKey.generate())
    else:
        async with open_sqlite_stores(tmp_path / "data") as opened:
            yield seal_stores(opened, MasterKey.generate())


async def test_a1_erasing_an_account_destroys_its_keys(stores: Stores) -> None:
    clock = ManualClock()
    now = clock.now_ms()
    alice = await stores.personal.create_user(phone="+15550001", display_name="a", now=now)
    await stores.cross.append(
        NewEntry(
            conv_id="s:1",
            kind="message",
            sender=alice.user_id,
            ts=now,
            body=b"words",
            cmid="c1",
            create=NewConversation(
                conv_id="s:1",
                kind="self",
                title="",
                owner_id=None,
                member_limit=1,
                members=((alice.user_id, "member"),),
            ),
        )
    )
    assert (await stores.keys.load(user_owner(alice.user_id))).keys

    async def publish(entry: Entry) -> None:
        return None

    await stores.personal.begin_deletion(alice.user_id, now=now)
    await AccountEraser(stores, clock, publish_recall=publish).finish_all()
    gone = await stores.keys.load(user_owner(alice.user_id))
    assert gone.keys == () and gone.destroyed_at == now


async def test_a1_erasing_an_account_erases_its_dings_and_the_relay_sends_no_words(
    stores: Stores,
) -> None:
    """A3 for DINGs (G1): the text is sealed with the sender's key, so erasing the account
    erases it on every read path; an SMS step still in the outbox fails instead of sending
    an empty (or any) text."""
    clock = ManualClock()
    now = clock.now_ms()
    alice = await stores.personal.create_user(phone="+15550001", display_name="a", now=now)
    bob = await stores.personal.create_user(phone="+15550002", display_name="b", now=now)
    ding = (
        await stores.ding.create(
            NewDing(
                sender=alice.user_id,
                payer=f"user:{alice.user_id}",
                text="call me now",
                cmid="d1",
                fingerprint=b"fp",
                state="sent",
                created_at=now,
                send_at=now,
                sms_after_s=0,
                call_after_s=None,
                recipients=(bob.user_id,),
                steps=(
                    NewStep(user_id=bob.user_id, channel="in_app", due_at=now, state="sent"),
                    NewStep(user_id=bob.user_id, channel="sms", due_at=now),
                ),
            )
        )
    ).ding
    assert ding.text == "call me now"
    payer = f"user:{alice.user_id}"
    charge = QuotaCharge(account=payer, channel="sms", period="p", grant=5, member=alice.user_id)
    sms = [s.step_id for r in ding.recipients for s in r.steps if s.channel == "sms"]
    await hand_over(stores.ding, sms, now=now, charges={(payer, "sms"): charge})

    async def publish(entry: Entry) -> None:
        return None

    await stores.personal.begin_deletion(alice.user_id, now=now)
    await AccountEraser(stores, clock, publish_recall=publish).finish_all()
    got = await stores.ding.get(ding.ding_id)
    assert got is not None and got.text == ""
    (received,) = await stores.ding.list_received(bob.user_id, before=None, limit=5)
    assert received.text == ""

    notifier = MemoryNotifier(clock=clock)
    changes: list[StepChange] = []
    recorded = trio.Event()

    def on_change(change: StepChange) -> None:
        changes.append(change)
        recorded.set()

    relay = DingRelay(
        store=stores.ding,
        personal=stores.personal,
        account_of=stores.orgs.account_of_user,
        notifier=notifier,
        clock=clock,
        on_change=on_change,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with trio.fail_after(5):
            await recorded.wait()
        nursery.cancel_scope.cancel()
    assert relay.statistics().failed == 1
    assert notifier.sms == []
    (change,) = changes
    assert change.ding.text == ""
    assert [s.state for s in change.recipient.steps if s.channel == "sms"] == ["failed"]


async def test_o4_dissolving_an_organisation_destroys_its_keys(stores: Stores) -> None:
    clock = ManualClock()
    now = clock.now_ms()
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=now)
    await stores.orgs.add_copy(
        org.org_id, NewCopy(member=1, conv_ref="r", ts=now, body=b"copied", source="cross:1")
    )
    owner = org_owner(org.org_id)
    assert (await stores.keys.load(owner)).keys
    await stores.orgs.mark_dissolving(org.org_id, now=now)
    await Dissolver(stores.orgs, on_dissolved=org_keys_destroyer(stores.keys, clock)).finish_all()
    gone = await stores.keys.load(owner)
    assert gone.keys == () and gone.destroyed_at == now


async def test_o4_a_copy_on_its_way_to_a_dissolving_organisation_is_dropped(
    stores: Stores,
) -> None:
    clock = ManualClock()
    now = clock.now_ms()
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=5, now=now - 10)
    await stores.orgs.add_member(org.org_id, 1, role="member", disclosure="", now=now - 10)
    await stores.consent.set_consent(user_id=1, org_id=org.org_id, granted=True, now=now - 5)
    await stores.cross.append(
        NewEntry(
            conv_id="s:1",
            kind="message",
            sender=1,
            ts=now,
            body=msgspec.msgpack.encode(Content(text="words")),
            cmid="c1",
            effects=org_copy_effect((org.org_id,)),
            create=NewConversation(
                conv_id="s:1",
                kind="self",
                title="",
                owner_id=None,
                member_limit=1,
                members=((1, "member"),),
            ),
        )
    )
    await stores.orgs.mark_dissolving(org.org_id, now=now)
    await org_keys_destroyer(stores.keys, clock)(org.org_id)
    relay = OutboxRelay(
        cross=stores.cross,
        org_conversations=stores.org_conversations,
        orgs=stores.orgs,
        consent=stores.consent,
        feeds=OrgFeeds(),
        ref_key=b"k" * 32,
    )
    # The member still has a span and consent: only the destroyed keys stop the copy.
    assert await stores.orgs.membership_spans(org.org_id, 1) == [(now - 10, None)]
    await relay.drain()
    assert (relay.copied, relay.finished) == (0, 1)
    assert await stores.orgs.copies(org.org_id, limit=5, include_hidden=True) == []
