"""``DingStore`` conformance (G1-G3): every backend keeps DINGs, steps, the outbox and the
quota ledger the same way (house habit 7). The ``stores`` fixture runs each test on memory
and SQLite."""

from __future__ import annotations

import pytest

from storage.ding import DingStore
from storage.ding_records import (
    STEP_TRANSITIONS,
    ChannelName,
    Ding,
    NewDing,
    NewStep,
    QuotaCharge,
)
from storage.errors import IdempotencyConflict
from storage.stores import Stores

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
    result = await store.hand_over(sms, now=SMS_AT, charges=charges())
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
    assert (await store.hand_over(sms, now=SMS_AT + 1, charges=charges())).changed == ()
    done = await store.outbox_sent(sms[0], now=SMS_AT + 5)
    assert done is not None
    assert [s.state for s in done.recipient.steps if s.channel == "sms"] == ["sent"]
    assert await store.outbox_sent(sms[0], now=SMS_AT + 6) is None


async def test_g2_exhausted_quota_is_a_status_on_the_step(store: DingStore) -> None:
    ding = (await store.create(new_ding())).ding
    sms = step_ids(ding, user=2, channel="sms") + step_ids(ding, user=3, channel="sms")
    result = await store.hand_over(sms, now=SMS_AT, charges=charges(grant=1))
    assert [s.state for s, _ in result.changed] == ["handed_over", "quota_exhausted"]
    assert len(await store.claim_outbox(now=SMS_AT, limit=10)) == 1
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and (balance.granted, balance.used) == (1, 1)
    # A top-up (an organisation's package) makes room again.
    topped = await store.top_up("user:1", "sms", "2026-01", units=5)
    assert (topped.granted, topped.used) == (6, 1)
    fresh = await store.top_up("org:7", "call", "package", units=3)
    assert (fresh.granted, fresh.used, fresh.by_member) == (3, 0, {})
    assert await store.quota_balance("org:7", "sms", "package") is None


async def test_g1_confirm_cancels_scheduled_steps_and_withdraws_unclaimed_rows(
    store: DingStore,
) -> None:
    ding = (await store.create(new_ding())).ding
    sms2 = step_ids(ding, user=2, channel="sms")
    sms3 = step_ids(ding, user=3, channel="sms")
    await store.hand_over(sms2 + sms3, now=SMS_AT, charges=charges())
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
    balance = await store.quota_balance("user:1", "sms", "2026-01")
    assert balance is not None and balance.used == 1 and balance.by_member == {1: 1}
    assert await store.claim_outbox(now=SMS_AT + 10, limit=10) == []
    assert await all_pending(store) == []
    # A timer that fires after the confirm finds nothing to do.
    calls = step_ids(after, user=3, channel="call")
    assert (await store.hand_over(calls, now=CALL_AT, charges=charges())).changed == ()
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
    result = await store.hand_over(in_app + sms, now=later + 300_000, charges=charges())
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
    await store.hand_over([sms], now=SMS_AT, charges=charges())
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


def test_the_transition_table_ends_in_final_states() -> None:
    finals = {s for s, targets in STEP_TRANSITIONS.items() if not targets}
    assert finals == {"sent", "failed", "cancelled", "quota_exhausted"}
    for targets in STEP_TRANSITIONS.values():
        assert targets <= STEP_TRANSITIONS.keys()
