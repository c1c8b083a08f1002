"""``DingStore`` conformance (G1-G3): every backend keeps DINGs, steps, the outbox and the
quota ledger the same way (house habit 7). The ``stores`` fixture runs each test on memory
and SQLite."""

from __future__ import annotations

import msgspec
import pytest

from storage.ding import DingStore
from storage.ding_records import (
    STEP_TRANSITIONS,
    ChannelName,
    Ding,
    NewDing,
    NewStep,
    QuotaCharge,
    StepCharge,
    charge_key,
)
from storage.errors import IdempotencyConflict
from storage.records import IdempotencyKey
from storage.stores import Stores
from tests.ding_steps import charge_due, hand_over, settle_refunds

T0 = 1_767_225_600_000
SMS_AT = T0 + 300_000
CALL_AT = T0 + 900_000


def new_ding(
    *,
    sender: int = 1,
    recipients: tuple[int, ...] = (2, 3),
    cmid: str = "c1",
    scheduled_at: int | None = None,
    fingerprint: bytes = b"f1",
) -> NewDing:
    send_at = scheduled_at if scheduled_at is not None else T0
    steps: list[NewStep] = []
    for user in recipients:
        steps.append(
            NewStep(
                user_id=user,
                channel="in_app",
                due_at=send_at,
                state="scheduled" if scheduled_at is not None else "sent",
            )
        )
        steps.append(NewStep(user_id=user, channel="sms", due_at=send_at + 300_000))
        steps.append(NewStep(user_id=user, channel="call", due_at=send_at + 900_000))
    return NewDing(
        sender=sender,
        payer=f"user:{sender}",
        text="the server room is on fire",
        cmid=cmid,
        fingerprint=fingerprint,
        state="scheduled" if scheduled_at is not None else "sent",
        created_at=T0,
        send_at=send_at,
        sms_after_s=300,
        call_after_s=900,
        recipients=recipients,
        steps=tuple(steps),
    )


def charges(grant: int = 10, sender: int = 1) -> dict[tuple[str, ChannelName], QuotaCharge]:
    return {
        (f"user:{sender}", ch): QuotaCharge(
            account=f"user:{sender}", channel=ch, period="2026-01", grant=grant, member=sender
        )
        for ch in ("sms", "call")
    }


async def all_pending(store: DingStore) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    after = None
    while True:
        page = await store.pending_steps(after=after, limit=3)
        if not page:
            return found
        found.extend(page)
        after = page[-1]


def step_ids(ding: Ding, *, user: int, channel: str) -> list[int]:
    row = ding.recipient(user)
    assert row is not None
    return [s.step_id for s in row.steps if s.channel == channel]


@pytest.fixture
def store(stores: Stores) -> DingStore:
    return stores.ding


async def test_g1_create_stores_recipients_and_steps_and_is_idempotent(store: DingStore) -> None:
    created = await store.create(new_ding())
    assert not created.duplicate
    ding = created.ding
    assert ding.state == "sent" and ding.round == 1 and ding.round_at == T0
    assert [r.user_id for r in ding.recipients] == [2, 3]
    for row in ding.recipients:
        assert [(s.channel, s.state) for s in row.steps] == [
            ("in_app", "sent"),
            ("sms", "scheduled"),
            ("call", "scheduled"),
        ]
        assert row.steps[0].changed_at == T0 and row.steps[1].changed_at is None
    again = await store.create(new_ding())
    assert again.duplicate and again.ding == ding
    with pytest.raises(IdempotencyConflict):
        await store.create(new_ding(fingerprint=b"other"))
    assert await store.get(ding.ding_id) == ding
    assert await store.get(ding.ding_id + 100) is None


async def test_pending_steps_page_in_due_order(store: DingStore) -> None:
    first = (await store.create(new_ding(cmid="a"))).ding
    second = (await store.create(new_ding(cmid="b", scheduled_at=T0 + 60_000))).ding
    pending = await all_pending(store)
    assert pending == sorted(pending)
    expected = [
        (s.due_at, s.step_id)
        for d in (first, second)
        for r in d.recipients
        for s in r.steps
        if s.state == "scheduled"
    ]
    assert pending == sorted(expected)
    steps = await store.steps([p[1] for p in pending])
    assert [s.step_id for s in steps] == sorted(p[1] for p in pending)
    assert await store.payers([first.ding_id, 999]) == {first.ding_id: "user:1"}


async def test_g1_hand_over_writes_the_outbox_row_and_charges_the_quota(store: DingStore) -> None:
    ding = (await store.create(new_ding())).ding
    sms = step_ids(ding, user=2, channel="sms") + step_ids(ding, user=3, channel="sms")
    result = await hand_over(store, sms, now=SMS_AT, charges=charges())
    assert [s.state for s, _ in result.changed] == ["handed_over", "handed_over"]
    assert all(change.recipient.user_id == s.user_id for s, change in result.changed)
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and (balance.granted, balance.used) == (10, 2)
    assert balance.by_member == {1: 2}
    assert await store.next_outbox_attempt() == SMS_AT
    assert await store.claim_outbox(now=SMS_AT - 1, limit=10) == []
    items = await store.claim_outbox(now=SMS_AT, limit=10)
    assert [(i.step_id, i.user_id, i.channel, i.attempts) for i in items] == [
        (sms[0], 2, "sms", 0),
        (sms[1], 3, "sms", 0),
    ]
    assert items[0].idempotency_key != items[1].idempotency_key
    assert items[0].text == "the server room is on fire" and items[0].sender == 1
    assert await store.claim_outbox(now=SMS_AT, limit=10) == []  # claimed
    assert await store.next_outbox_attempt() is None
    # A step handed over twice (a late or repeated timer) changes nothing.
    assert (await hand_over(store, sms, now=SMS_AT + 1, charges=charges())).changed == ()
    done = await store.outbox_sent(sms[0], now=SMS_AT + 5)
    assert done is not None
    assert [s.state for s in done.recipient.steps if s.channel == "sms"] == ["sent"]
    assert await store.outbox_sent(sms[0], now=SMS_AT + 6) is None


async def test_g2_exhausted_quota_is_a_status_on_the_step(store: DingStore) -> None:
    ding = (await store.create(new_ding())).ding
    sms = step_ids(ding, user=2, channel="sms") + step_ids(ding, user=3, channel="sms")
    result = await hand_over(store, sms, now=SMS_AT, charges=charges(grant=1))
    assert [s.state for s, _ in result.changed] == ["handed_over", "quota_exhausted"]
    assert len(await store.claim_outbox(now=SMS_AT, limit=10)) == 1
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and (balance.granted, balance.used) == (1, 1)
    # A top-up (an organisation's package) makes room again.
    topped = (await store.top_up("user:1", "sms", "2026-01", units=5)).balance
    assert (topped.granted, topped.used) == (6, 1)
    fresh = (await store.top_up("org:7", "call", "package", units=3)).balance
    assert (fresh.granted, fresh.used, fresh.by_member) == (3, 0, {})
    assert await store.quota_balance("org:7", "sms", "package") is None


async def test_g1_confirm_cancels_scheduled_steps_and_withdraws_unclaimed_rows(
    store: DingStore,
) -> None:
    ding = (await store.create(new_ding())).ding
    sms2 = step_ids(ding, user=2, channel="sms")
    sms3 = step_ids(ding, user=3, channel="sms")
    await hand_over(store, sms2 + sms3, now=SMS_AT, charges=charges())
    (claimed,) = await store.claim_outbox(now=SMS_AT, limit=1)
    assert claimed.step_id == sms2[0]
    # User 2's row is with the relay: it stays. User 3's is withdrawn and refunded.
    for user in (2, 3):
        change = await store.confirm(ding.ding_id, user, now=SMS_AT + 10)
        assert change is not None and change.recipient.confirmed_at == SMS_AT + 10
        assert change.recipient.read_at == SMS_AT + 10
        assert change.recipient.delivered_at == SMS_AT + 10
    after = await store.get(ding.ding_id)
    assert after is not None
    states = {r.user_id: {s.channel: s.state for s in r.steps} for r in after.recipients}
    assert states == {
        2: {"in_app": "sent", "sms": "handed_over", "call": "cancelled"},
        3: {"in_app": "sent", "sms": "cancelled", "call": "cancelled"},
    }
    # G2: the withdrawn step is owed its unit back (a confirm before its SMS fell due owes
    # nothing for it); carried out by key, once.
    assert [s for s, _ in await store.refunds_owed(limit=10)] == sms3
    assert await settle_refunds(store, now=SMS_AT + 10) == 1
    assert await store.refunds_owed(limit=10) == []
    assert await store.refund_charge(charge_key("cross", sms3[0]), now=SMS_AT + 11) is False
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and balance.used == 1 and balance.by_member == {1: 1}
    assert await store.claim_outbox(now=SMS_AT + 10, limit=10) == []
    assert await all_pending(store) == []
    # A timer that fires after the confirm finds nothing to do.
    calls = step_ids(after, user=3, channel="call")
    assert (await hand_over(store, calls, now=CALL_AT, charges=charges())).changed == ()
    # Confirming again keeps the first time.
    again = await store.confirm(ding.ding_id, 3, now=SMS_AT + 99)
    assert again is not None and again.recipient.confirmed_at == SMS_AT + 10
    assert await store.confirm(ding.ding_id, 42, now=SMS_AT) is None
    assert (await store.outbox_sent(sms2[0], now=SMS_AT + 20)) is not None


async def test_read_and_delivered_are_set_once(store: DingStore) -> None:
    ding = (await store.create(new_ding())).ding
    delivered = await store.mark_delivered(ding.ding_id, [2, 2, 42], now=T0 + 1)
    assert [c.user_id for c in delivered] == [2]
    assert delivered[0].recipient.delivered_at == T0 + 1
    assert await store.mark_delivered(ding.ding_id, [2], now=T0 + 2) == []
    read = await store.mark_read(ding.ding_id, 3, now=T0 + 3)
    assert read is not None
    assert (read.recipient.read_at, read.recipient.delivered_at) == (T0 + 3, T0 + 3)
    again = await store.mark_read(ding.ding_id, 3, now=T0 + 4)
    assert again is not None and again.recipient.read_at == T0 + 3
    assert await store.mark_read(ding.ding_id, 42, now=T0) is None


async def test_scheduled_ding_is_released_by_its_in_app_step_or_cancelled(
    store: DingStore,
) -> None:
    later = T0 + 60_000
    ding = (await store.create(new_ding(scheduled_at=later))).ding
    assert ding.state == "scheduled" and ding.send_at == later
    assert await store.list_received(2, before=None, limit=10) == []
    in_app = step_ids(ding, user=2, channel="in_app") + step_ids(ding, user=3, channel="in_app")
    sms = step_ids(ding, user=2, channel="sms")
    result = await hand_over(store, in_app + sms, now=later + 300_000, charges=charges())
    assert result.released == (ding.ding_id,)
    assert [(s.channel, s.state) for s, _ in result.changed] == [
        ("in_app", "sent"),
        ("in_app", "sent"),
        ("sms", "handed_over"),
    ]
    assert [d.ding_id for d in await store.list_received(2, before=None, limit=10)] == [
        ding.ding_id
    ]
    assert await store.cancel(ding.ding_id, now=later) is None  # it went out
    other = (await store.create(new_ding(cmid="c2", scheduled_at=later))).ding
    cancelled = await store.cancel(other.ding_id, now=T0 + 1)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert all(s.state == "cancelled" for r in cancelled.recipients for s in r.steps)
    assert await store.cancel(other.ding_id, now=T0 + 2) is None
    assert await store.list_received(3, before=None, limit=10) != []
    assert other.ding_id not in [
        d.ding_id for d in await store.list_received(3, before=None, limit=9)
    ]


async def test_redding_starts_a_new_round_once(store: DingStore) -> None:
    ding = (await store.create(new_ding())).ding
    await store.confirm(ding.ding_id, 3, now=T0 + 1)
    now = T0 + 400_000
    steps = [
        NewStep(user_id=2, channel="in_app", due_at=now, state="sent"),
        NewStep(user_id=2, channel="sms", due_at=now + 300_000),
    ]
    again = await store.redding(ding.ding_id, expect_round=1, now=now, steps=steps)
    assert again is not None and (again.round, again.round_at) == (2, now)
    row = again.recipient(2)
    assert row is not None
    assert [(s.channel, s.round, s.state) for s in row.steps] == [
        ("in_app", 1, "sent"),
        ("sms", 1, "cancelled"),
        ("call", 1, "cancelled"),
        ("in_app", 2, "sent"),
        ("sms", 2, "scheduled"),
    ]
    assert await store.redding(ding.ding_id, expect_round=1, now=now, steps=steps) is None
    assert [p[1] for p in await all_pending(store)] == [row.steps[-1].step_id]


async def test_outbox_retry_and_failure_and_claims_after_a_restart(store: DingStore) -> None:
    ding = (await store.create(new_ding(recipients=(2,)))).ding
    (sms,) = step_ids(ding, user=2, channel="sms")
    await hand_over(store, [sms], now=SMS_AT, charges=charges())
    (item,) = await store.claim_outbox(now=SMS_AT, limit=5)
    retried = await store.outbox_retry(sms, next_attempt_at=SMS_AT + 2_000, now=SMS_AT)
    assert retried is not None
    assert await store.next_outbox_attempt() == SMS_AT + 2_000
    (again,) = await store.claim_outbox(now=SMS_AT + 2_000, limit=5)
    assert again.attempts == 1 and again.idempotency_key == item.idempotency_key
    # The process dies holding the claim: at start, claims are released.
    assert await store.release_claims() == 1
    (third,) = await store.claim_outbox(now=SMS_AT + 2_000, limit=5)
    assert third.idempotency_key == item.idempotency_key
    failed = await store.outbox_failed(sms, now=SMS_AT + 3_000)
    assert failed is not None
    assert [s.state for s in failed.recipient.steps if s.channel == "sms"] == ["failed"]
    assert await store.outbox_retry(sms, next_attempt_at=0, now=0) is None
    assert await store.release_claims() == 0


async def test_g2_a_step_that_fails_without_reaching_a_provider_is_refunded(
    store: DingStore,
) -> None:
    """``outbox_failed(refund=True)``: the step had no number to send to (G1 with P5: an
    enterprise account without a contact phone), so no provider saw it: ``failed``, its row
    gone, and a refund of its unit owed in the same transaction, carried out once. A
    failure without ``refund`` (the provider refused) keeps its unit used."""
    ding = (await store.create(new_ding())).ding
    sms2 = step_ids(ding, user=2, channel="sms")
    sms3 = step_ids(ding, user=3, channel="sms")
    await hand_over(store, sms2 + sms3, now=SMS_AT, charges=charges())
    assert len(await store.claim_outbox(now=SMS_AT, limit=5)) == 2
    unreachable = await store.outbox_failed(sms2[0], now=SMS_AT + 1, refund=True)
    assert unreachable is not None and unreachable.recipient.user_id == 2
    assert [s.state for s in unreachable.recipient.steps if s.channel == "sms"] == ["failed"]
    refused = await store.outbox_failed(sms3[0], now=SMS_AT + 1)
    assert refused is not None
    assert [s.state for s in refused.recipient.steps if s.channel == "sms"] == ["failed"]
    assert await store.refunds_owed(limit=10) == [(sms2[0], "user:1")]
    # The row is gone: a repeat changes nothing and owes nothing more.
    assert await store.outbox_failed(sms2[0], now=SMS_AT + 2, refund=True) is None
    assert await store.claim_outbox(now=SMS_AT + 10_000, limit=5) == []
    assert await settle_refunds(store, now=SMS_AT + 3) == 1
    assert await settle_refunds(store, now=SMS_AT + 4) == 0
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and balance.used == 1 and balance.by_member == {1: 1}


async def test_lists_are_newest_first_and_paged(store: DingStore) -> None:
    ids = [(await store.create(new_ding(cmid=f"c{i}"))).ding.ding_id for i in range(5)]
    await store.create(new_ding(sender=9, cmid="x", recipients=(1,)))
    sent = await store.list_sent(1, before=None, limit=2)
    assert [d.ding_id for d in sent] == [ids[4], ids[3]]
    more = await store.list_sent(1, before=ids[3], limit=10)
    assert [d.ding_id for d in more] == [ids[2], ids[1], ids[0]]
    received = await store.list_received(2, before=ids[1], limit=10)
    assert [d.ding_id for d in received] == [ids[0]]
    assert [d.sender for d in await store.list_received(1, before=None, limit=10)] == [9]


def topup_key(
    client_id: str = "t:k1", *, sender: int = 9, fingerprint: bytes = b"fp1"
) -> IdempotencyKey:
    return IdempotencyKey(sender=sender, client_id=client_id, fingerprint=fingerprint)


async def test_g2_a_top_up_with_a_key_is_added_once(store: DingStore) -> None:
    first = await store.top_up("org:7", "sms", "package", units=5, idempotency=topup_key())
    assert not first.duplicate and first.balance.granted == 5
    # A resend (the reply was lost) adds nothing and reads the balance as it is now.
    again = await store.top_up("org:7", "sms", "package", units=5, idempotency=topup_key())
    assert again.duplicate and again.balance.granted == 5
    # The same key from another admin, and a new key, are new top-ups.
    other_admin = topup_key(sender=10)
    assert not (
        await store.top_up("org:7", "sms", "package", units=5, idempotency=other_admin)
    ).duplicate
    second = await store.top_up("org:7", "sms", "package", units=2, idempotency=topup_key("t:k2"))
    assert not second.duplicate and second.balance.granted == 12
    # Without a key, every call adds (the ledger's own use, e.g. tests and tools).
    assert (await store.top_up("org:7", "sms", "package", units=1)).balance.granted == 13
    late = await store.top_up("org:7", "sms", "package", units=5, idempotency=topup_key())
    assert late.duplicate and late.balance.granted == 13
    balance = await store.quota_balance("org:7", "sms", "package")
    assert balance is not None and balance.granted == 13


async def test_g2_a_top_up_key_reused_for_another_top_up_conflicts(store: DingStore) -> None:
    await store.top_up("org:7", "sms", "package", units=5, idempotency=topup_key())
    with pytest.raises(IdempotencyConflict):
        await store.top_up(
            "org:7", "call", "package", units=9, idempotency=topup_key(fingerprint=b"fp2")
        )
    # Nothing of the refused one was written.
    assert await store.quota_balance("org:7", "call", "package") is None
    balance = await store.quota_balance("org:7", "sms", "package")
    assert balance is not None and balance.granted == 5


async def test_a3_the_store_keeps_a_sealed_text_as_given(store: DingStore) -> None:
    """The sealing wrapper (storage.sealing) hands the store ``text=""`` and the envelope in
    ``sealed``; every backend keeps the bytes and gives them back on every read path."""
    envelope = b"\x01sealed-bytes\x00\xff"
    new = msgspec.structs.replace(new_ding(), text="", sealed=envelope)
    ding = (await store.create(new)).ding
    assert (ding.text, ding.sealed) == ("", envelope)
    got = await store.get(ding.ding_id)
    assert got is not None and got.sealed == envelope
    (listed,) = await store.list_received(2, before=None, limit=5)
    assert listed.sealed == envelope
    await hand_over(store, step_ids(ding, user=2, channel="sms"), now=SMS_AT, charges=charges())
    (item,) = await store.claim_outbox(now=SMS_AT, limit=5)
    assert item.text == ""  # the relay's text comes from the wrapper, which opens the DING
    plain = (await store.create(new_ding(cmid="c2"))).ding
    assert (plain.text, plain.sealed) == ("the server room is on fire", None)


def test_the_transition_table_ends_in_final_states() -> None:
    finals = {s for s, targets in STEP_TRANSITIONS.items() if not targets}
    assert finals == {"sent", "failed", "cancelled", "quota_exhausted"}
    for targets in STEP_TRANSITIONS.values():
        assert targets <= STEP_TRANSITIONS.keys()


# --- G2 across databases: charges keyed by (store, step), refunds owed; O4 deletion --------


def sms_charge(account: str = "user:1", grant: int = 10) -> QuotaCharge:
    return QuotaCharge(account=account, channel="sms", period="2026-01", grant=grant, member=1)


async def test_g2_a_step_is_charged_once_whatever_is_repeated(store: DingStore) -> None:
    key = charge_key("cross", 7)
    assert await store.charge_step(key, sms_charge(grant=1), now=T0) == "paid"
    # A crash before the hand-over committed: the step fires again, the charge answers the
    # recorded outcome and takes nothing more.
    assert await store.charge_step(key, sms_charge(grant=1), now=T0 + 1) == "paid"
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and (balance.granted, balance.used) == (1, 1)
    # The balance is used up: another step is exhausted, and stays so after a top-up.
    other = charge_key("cross", 8)
    assert await store.charge_step(other, sms_charge(grant=1), now=T0) == "exhausted"
    await store.top_up("user:1", "sms", "2026-01", units=5)
    assert await store.charge_step(other, sms_charge(grant=1), now=T0) == "exhausted"
    # The same step number of the other store is another charge.
    assert await store.charge_step(charge_key("org", 7), sms_charge(), now=T0) == "paid"
    # A refund gives the unit back once; the charge still answers paid, taking nothing.
    assert await store.refund_charge(key, now=T0 + 2) is True
    assert await store.refund_charge(key, now=T0 + 3) is False
    assert await store.charge_step(key, sms_charge(), now=T0 + 4) == "paid"
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and (balance.granted, balance.used) == (6, 1)
    assert balance.by_member == {1: 1}
    # A refund that comes before its charge makes the key void: never charged later.
    void = charge_key("cross", 9)
    assert await store.refund_charge(void, now=T0) is False
    assert await store.charge_step(void, sms_charge(), now=T0 + 1) == "void"
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and balance.used == 1


async def test_g2_hand_over_records_the_outcome_it_is_given(store: DingStore) -> None:
    ding = (await store.create(new_ding(recipients=(2, 3, 4)))).ding
    sms2, sms3, sms4 = (step_ids(ding, user=u, channel="sms")[0] for u in (2, 3, 4))
    with pytest.raises(ValueError):
        await store.hand_over([sms2], now=SMS_AT, charged={})
    paid = StepCharge(charge=sms_charge(), outcome="paid")
    result = await store.hand_over(
        [sms2, sms3, sms4],
        now=SMS_AT,
        charged={
            sms2: paid,
            sms3: StepCharge(charge=sms_charge(), outcome="exhausted"),
            sms4: StepCharge(charge=sms_charge(), outcome="void"),
        },
    )
    states = {step.step_id: step.state for step, _ in result.changed}
    assert states == {sms2: "handed_over", sms3: "quota_exhausted", sms4: "cancelled"}
    # hand_over charges nothing itself: the charge was the payer's store's.
    assert await store.quota_balance("user:1", "sms", "2026-01") is None
    (item,) = await store.claim_outbox(now=SMS_AT, limit=5)
    assert item.idempotency_key == f"rivet-ding-x{ding.ding_id}-s{sms2}-{T0}"
    # Repeating the hand-over (a timer that fires twice) changes nothing and owes nothing.
    again = await store.hand_over([sms2], now=SMS_AT + 1, charged={sms2: paid})
    assert again.changed == () and await store.refunds_owed(limit=5) == []


async def test_g2_a_charged_step_that_never_reaches_the_provider_is_owed_a_refund(
    store: DingStore,
) -> None:
    ding = (await store.create(new_ding())).ding
    sms2 = step_ids(ding, user=2, channel="sms")
    sms3 = step_ids(ding, user=3, channel="sms")
    # Charged, then the recipient confirmed before the hand-over: found cancelled, owed.
    charged = await charge_due(store, sms2, now=SMS_AT, charges=charges())
    await store.confirm(ding.ding_id, 2, now=SMS_AT)
    assert (await store.hand_over(sms2, now=SMS_AT, charged=charged)).changed == ()
    # Confirmed after the SMS fell due, before it was handed over (it may have been charged
    # by a process that died): owed too. The call, not yet due, owes nothing.
    await store.confirm(ding.ding_id, 3, now=SMS_AT + 5)
    assert [s for s, _ in await store.refunds_owed(limit=10)] == sms2 + sms3
    assert all(payer == "user:1" for _, payer in await store.refunds_owed(limit=10))
    # Carried out: user 2's unit comes back, user 3's step was never charged (now void).
    assert await settle_refunds(store, now=SMS_AT + 6) == 1
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and balance.used == 0
    assert await store.charge_step(charge_key("cross", sms3[0]), sms_charge(), now=T0) == "void"


async def test_g2_cancel_and_redding_after_a_step_fell_due_owe_a_refund(store: DingStore) -> None:
    later = T0 + 60_000
    scheduled = (await store.create(new_ding(scheduled_at=later, cmid="s"))).ding
    await store.cancel(scheduled.ding_id, now=T0)  # nothing was due: nothing owed
    assert await store.refunds_owed(limit=10) == []
    ding = (await store.create(new_ding(cmid="r"))).ding
    sms = step_ids(ding, user=2, channel="sms") + step_ids(ding, user=3, channel="sms")
    again = await store.redding(
        ding.ding_id,
        expect_round=1,
        now=SMS_AT,
        steps=[NewStep(user_id=2, channel="in_app", due_at=SMS_AT, state="sent")],
    )
    assert again is not None
    assert [s for s, _ in await store.refunds_owed(limit=10)] == sms[:1]


@pytest.fixture
def org_store(stores: Stores) -> DingStore:
    return stores.org_ding


def org_ding(org: int, *, cmid: str, sender: int = 1) -> NewDing:
    return msgspec.structs.replace(
        new_ding(sender=sender, cmid=cmid), payer=f"org:{org}/user:{sender}"
    )


async def test_d2_the_organisation_store_labels_its_dings_and_keys(org_store: DingStore) -> None:
    ding = (await org_store.create(org_ding(5, cmid="a"))).ding
    assert ding.domain == "org"
    assert (await org_store.get(ding.ding_id)) == ding
    sms = step_ids(ding, user=2, channel="sms")
    await org_store.top_up("org:5", "sms", "package", units=1)
    package: dict[tuple[str, ChannelName], QuotaCharge] = {
        ("org:5/user:1", "sms"): QuotaCharge(
            account="org:5", channel="sms", period="package", grant=0, member=1
        )
    }
    await hand_over(org_store, sms, now=SMS_AT, charges=package, domain="org")
    (item,) = await org_store.claim_outbox(now=SMS_AT, limit=5)
    assert item.idempotency_key == f"rivet-ding-o{ding.ding_id}-s{sms[0]}-{T0}"


async def test_o4_delete_org_chunk_removes_an_organisations_dings_and_package(
    org_store: DingStore,
) -> None:
    mine = [(await org_store.create(org_ding(5, cmid=f"m{i}"))).ding for i in range(3)]
    other = (await org_store.create(org_ding(50, cmid="o"))).ding
    package: dict[tuple[str, ChannelName], QuotaCharge] = {
        (f"org:{org}/user:1", "sms"): QuotaCharge(
            account=f"org:{org}", channel="sms", period="package", grant=0, member=1
        )
        for org in (5, 50)
    }
    for org in (5, 50):
        await org_store.top_up(
            f"org:{org}",
            "sms",
            "package",
            units=10,
            idempotency=IdempotencyKey(sender=9, client_id=f"t{org}", fingerprint=b"f"),
        )
    sms = step_ids(mine[0], user=2, channel="sms")
    await hand_over(
        org_store,
        sms,
        now=SMS_AT,
        charges={k: v for k, v in package.items() if k[0].startswith("org:5/")},
    )
    await org_store.confirm(mine[0].ding_id, 3, now=SMS_AT + 1)  # owes a refund row
    assert await org_store.refunds_owed(limit=5) != []
    deleted, rounds = 0, 0
    while (n := await org_store.delete_org_chunk(5, limit=2)) > 0:
        deleted, rounds = deleted + n, rounds + 1
    assert rounds >= 3 and deleted > 0
    assert await org_store.delete_org_chunk(5, limit=2) == 0
    for ding in mine:
        assert await org_store.get(ding.ding_id) is None
    assert await org_store.list_sent(1, before=None, limit=10) == [
        await org_store.get(other.ding_id)
    ]
    assert await org_store.quota_balance("org:5", "sms", "package") is None
    assert await org_store.claim_outbox(now=SMS_AT, limit=10) == []
    assert await org_store.refunds_owed(limit=5) == []
    # Only the other organisation's steps are still waiting; a timer of a deleted step that
    # fires finds nothing (a harmless no-op).
    pending = {step for _, step in await all_pending(org_store)}
    assert {s.ding_id for s in await org_store.steps(sorted(pending))} == {other.ding_id}
    gone = [s.step_id for r in mine[1].recipients for s in r.steps]
    assert await org_store.steps(gone) == []
    assert (await org_store.hand_over(gone, now=CALL_AT, charged={})).changed == ()
    kept = await org_store.quota_balance("org:50", "sms", "package")
    assert kept is not None and kept.granted == 10
    # Its top-up keys went with the package: the same key may be used afresh.
    again = await org_store.top_up(
        "org:5",
        "sms",
        "package",
        units=1,
        idempotency=IdempotencyKey(sender=9, client_id="t5", fingerprint=b"g"),
    )
    assert again.duplicate is False


async def test_d4_effects_are_recorded_with_the_ding_and_finished_once(store: DingStore) -> None:
    """Issue #4: a DING's copy effects are written in its own transaction, read back with
    the DING's header (no recipients) in effect order, paged, and forgotten when finished;
    a duplicate resend records none."""
    first = (
        await store.create(msgspec.structs.replace(new_ding(), effects=("org_copy:5,7",)))
    ).ding
    again = await store.create(msgspec.structs.replace(new_ding(), effects=("org_copy:5,7",)))
    assert again.duplicate
    none = (await store.create(new_ding(cmid="c2"))).ding  # no organisation: no effect
    second = (
        await store.create(msgspec.structs.replace(new_ding(cmid="c3"), effects=("org_copy:9",)))
    ).ding
    pending = await store.pending_effects(after=0, limit=10)
    assert [(e.kind, e.ding_id) for e in pending] == [
        ("org_copy:5,7", first.ding_id),
        ("org_copy:9", second.ding_id),
    ]
    assert none.ding_id not in {e.ding_id for e in pending}
    head = pending[0].ding
    assert head is not None
    assert (head.sender, head.text, head.created_at, head.recipients) == (
        1,
        "the server room is on fire",
        T0,
        (),
    )
    assert pending[0].effect_id < pending[1].effect_id
    assert await store.pending_effects(after=pending[0].effect_id, limit=10) == pending[1:]
    assert await store.pending_effects(after=0, limit=1) == pending[:1]
    await store.finish_effect(pending[0].effect_id)
    await store.finish_effect(pending[0].effect_id)  # again: nothing changes
    assert await store.pending_effects(after=0, limit=10) == pending[1:]
    await store.finish_effect(pending[1].effect_id)
    assert await store.pending_effects(after=0, limit=10) == []


async def test_o4_delete_org_chunk_removes_the_pending_effects_of_its_dings(
    org_store: DingStore,
) -> None:
    mine = (
        await org_store.create(
            msgspec.structs.replace(org_ding(5, cmid="m"), effects=("org_copy:5",))
        )
    ).ding
    other = (
        await org_store.create(
            msgspec.structs.replace(org_ding(50, cmid="o"), effects=("org_copy:50",))
        )
    ).ding
    while await org_store.delete_org_chunk(5, limit=10) > 0:
        pass
    assert await org_store.get(mine.ding_id) is None
    assert [e.ding_id for e in await org_store.pending_effects(after=0, limit=10)] == [
        other.ding_id
    ]
