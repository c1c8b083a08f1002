"""The in-memory ``DingStore``: the reference implementation of ``storage.ding``.

Every method runs to completion without awaiting, so under trio each one is one atomic
transaction; a write checks what can fail before it changes anything. Records are frozen
and replaced on update. Scheduled steps are also kept in a list sorted by (due_at, step_id),
so paging through them for the scheduler never sorts.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from msgspec.structs import replace

from storage.ding_records import (
    CHANNEL_ORDER,
    STEP_TRANSITIONS,
    ChannelName,
    ChargeOutcome,
    Ding,
    DingCreated,
    DingDomain,
    DingRecipient,
    DingStep,
    HandOver,
    NewDing,
    NewStep,
    OutboxItem,
    PendingDingEffect,
    QuotaBalance,
    QuotaCharge,
    StepChange,
    StepCharge,
    StepStateName,
    TopUp,
    step_idempotency_key,
)
from storage.errors import IdempotencyConflict
from storage.memory.idempotency import IdempotencyLog
from storage.records import IdempotencyKey

_QuotaKey = tuple[str, ChannelName, str]


@dataclass(slots=True)
class _OutboxRow:
    step_id: int
    key: str
    charge: QuotaCharge
    attempts: int
    next_attempt_at: int
    claimed: bool = False


@dataclass(slots=True)
class _Balance:
    granted: int
    used: int = 0
    by_member: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Charge:
    """A step's charge as recorded (``quota_charges``): state paid, exhausted, refunded or
    void (no charge then)."""

    state: str
    charge: QuotaCharge | None


class MemoryDingStore:
    def __init__(self, *, domain: DingDomain = "cross") -> None:
        #: Which kind of DINGs this store keeps: labels its records and its keys.
        self._domain: DingDomain = domain
        #: Charge key -> the recorded charge (G2 across databases).
        self._charges: dict[str, _Charge] = {}
        #: Steps owed a refund, ascending.
        self._refunds: set[int] = set()
        #: DING id -> the DING without its recipients (kept in ``_recipients``).
        self._dings: dict[int, Ding] = {}
        self._recipients: dict[int, dict[int, DingRecipient]] = {}
        self._steps: dict[int, DingStep] = {}
        #: (DING id, user id) -> that recipient's step ids, ascending.
        self._steps_of: dict[tuple[int, int], list[int]] = {}
        #: (due_at, step_id) of every scheduled step, ascending.
        self._scheduled: list[tuple[int, int]] = []
        self._by_sender: dict[int, list[int]] = {}
        self._by_recipient: dict[int, list[int]] = {}
        self._cmids: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._outbox: dict[int, _OutboxRow] = {}
        self._quota: dict[_QuotaKey, _Balance] = {}
        #: Idempotency keys of top-ups -> the balance each one filled (kept, never pruned).
        self._topups: IdempotencyLog[_QuotaKey] = IdempotencyLog()
        self._ding_ids = itertools.count(1)
        self._step_ids = itertools.count(1)
        #: D4: effect id -> (DING id, kind) of effects not finished yet, ascending.
        self._effects: dict[int, tuple[int, str]] = {}
        self._effect_ids = itertools.count(1)

    # --- reading back ---------------------------------------------------------------------

    def _ding(self, ding_id: int) -> Ding:
        rows = self._recipients[ding_id]
        recipients = tuple(
            replace(row, steps=tuple(self._steps[s] for s in self._steps_of[(ding_id, user)]))
            for user, row in sorted(rows.items())
        )
        return replace(self._dings[ding_id], recipients=recipients)

    def _change(self, ding_id: int, user_id: int) -> StepChange:
        return StepChange(ding=self._ding(ding_id), user_id=user_id)

    # --- steps ------------------------------------------------------------------------------

    def _add_step(self, ding_id: int, new: NewStep, *, round_: int, now: int) -> None:
        step = DingStep(
            step_id=next(self._step_ids),
            ding_id=ding_id,
            user_id=new.user_id,
            channel=new.channel,
            round=round_,
            due_at=new.due_at,
            state=new.state,
            changed_at=now if new.state == "sent" else None,
        )
        self._steps[step.step_id] = step
        self._steps_of.setdefault((ding_id, new.user_id), []).append(step.step_id)
        if step.state == "scheduled":
            bisect.insort(self._scheduled, (step.due_at, step.step_id))

    def _move(self, step: DingStep, state: StepStateName, now: int) -> DingStep:
        if state not in STEP_TRANSITIONS[step.state]:
            raise ValueError(f"step {step.step_id}: {step.state} -> {state} is no transition")
        if step.state == "scheduled":
            index = bisect.bisect_left(self._scheduled, (step.due_at, step.step_id))
            del self._scheduled[index]
        moved = replace(step, state=state, changed_at=now)
        self._steps[step.step_id] = moved
        return moved

    def _set_recipient(self, ding_id: int, user_id: int, **changes: int) -> None:
        rows = self._recipients[ding_id]
        rows[user_id] = replace(rows[user_id], **changes)

    # --- writes -------------------------------------------------------------------------------

    async def create(self, new: NewDing) -> DingCreated:
        recorded = self._cmids.get((new.sender, new.cmid))
        if recorded is not None:
            fingerprint, ding_id = recorded
            if fingerprint != new.fingerprint:
                raise IdempotencyConflict("idempotency key reused for a different DING")
            return DingCreated(ding=self._ding(ding_id), duplicate=True)
        ding_id = next(self._ding_ids)
        self._dings[ding_id] = Ding(
            ding_id=ding_id,
            sender=new.sender,
            payer=new.payer,
            text=new.text,
            cmid=new.cmid,
            state=new.state,
            created_at=new.created_at,
            send_at=new.send_at,
            sms_after_s=new.sms_after_s,
            call_after_s=new.call_after_s,
            round=1,
            round_at=new.send_at,
            sealed=new.sealed,
            domain=self._domain,
        )
        self._recipients[ding_id] = {u: DingRecipient(user_id=u) for u in new.recipients}
        for user in new.recipients:
            self._steps_of[(ding_id, user)] = []
            self._by_recipient.setdefault(user, []).append(ding_id)
        for step in new.steps:
            self._add_step(ding_id, step, round_=1, now=new.created_at)
        self._by_sender.setdefault(new.sender, []).append(ding_id)
        self._cmids[(new.sender, new.cmid)] = (new.fingerprint, ding_id)
        for kind in new.effects:
            self._effects[next(self._effect_ids)] = (ding_id, kind)
        return DingCreated(ding=self._ding(ding_id))

    async def hand_over(
        self,
        step_ids: Sequence[int],
        *,
        now: int,
        charged: Mapping[int, StepCharge],
    ) -> HandOver:
        due = sorted(
            (s for s in (self._steps.get(i) for i in step_ids) if s and s.state == "scheduled"),
            key=lambda s: (s.due_at, CHANNEL_ORDER[s.channel], s.step_id),
        )
        for step in due:
            if step.channel != "in_app" and step.step_id not in charged:
                raise ValueError(f"no quota charge for step {step.step_id}")
        moved_steps: list[DingStep] = []
        released: list[int] = []
        for step in due:
            ding = self._dings[step.ding_id]
            recipient = self._recipients[step.ding_id][step.user_id]
            if step.channel == "in_app":
                moved = self._move(step, "sent", now)
                if ding.state == "scheduled":
                    self._dings[ding.ding_id] = replace(ding, state="sent")
                    released.append(ding.ding_id)
                moved_steps.append(moved)
                continue
            paid = charged[step.step_id]
            if recipient.confirmed_at is not None or ding.state != "sent" or paid.outcome == "void":
                moved = self._move(step, "cancelled", now)
            elif paid.outcome == "paid":
                moved = self._move(step, "handed_over", now)
                key = step_idempotency_key(
                    ding_id=ding.ding_id,
                    step_id=step.step_id,
                    created_at=ding.created_at,
                    domain=self._domain,
                )
                self._outbox[step.step_id] = _OutboxRow(
                    step_id=step.step_id,
                    key=key,
                    charge=paid.charge,
                    attempts=0,
                    next_attempt_at=now,
                )
            else:
                moved = self._move(step, "quota_exhausted", now)
            moved_steps.append(moved)
        # G2: a paid step that did not go to the provider is owed its unit back.
        for step_id, paid in charged.items():
            found = self._steps.get(step_id)
            if paid.outcome == "paid" and found is not None and found.state == "cancelled":
                self._refunds.add(step_id)
        # Each change carries its DING as it is after the whole transaction.
        changed = tuple((s, self._change(s.ding_id, s.user_id)) for s in moved_steps)
        return HandOver(changed=changed, released=tuple(released))

    def _charge(self, charge: QuotaCharge) -> bool:
        balance = self._quota.setdefault(
            (charge.account, charge.channel, charge.period), _Balance(granted=charge.grant)
        )
        if balance.used >= balance.granted:
            return False
        balance.used += 1
        balance.by_member[charge.member] = balance.by_member.get(charge.member, 0) + 1
        return True

    def _refund(self, charge: QuotaCharge) -> None:
        balance = self._quota[(charge.account, charge.channel, charge.period)]
        balance.used -= 1
        balance.by_member[charge.member] -= 1

    def _cancel_scheduled(self, step: DingStep, now: int) -> None:
        """Cancel a ``scheduled`` step; an SMS or call step that had fallen due may have been
        charged (the charge commits before its hand-over): a refund is owed."""
        self._move(step, "cancelled", now)
        if step.channel != "in_app" and step.due_at <= now:
            self._refunds.add(step.step_id)

    async def confirm(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        row = self._recipients.get(ding_id, {}).get(user_id)
        if row is None:
            return None
        if row.confirmed_at is not None:
            return self._change(ding_id, user_id)
        self._set_recipient(
            ding_id,
            user_id,
            confirmed_at=now,
            read_at=row.read_at if row.read_at is not None else now,
            delivered_at=row.delivered_at if row.delivered_at is not None else now,
        )
        for step_id in self._steps_of[(ding_id, user_id)]:
            step = self._steps[step_id]
            if step.state == "scheduled":
                self._cancel_scheduled(step, now)
            elif step.state == "handed_over":
                outbox = self._outbox.get(step_id)
                if outbox is not None and not outbox.claimed:
                    del self._outbox[step_id]
                    self._move(step, "cancelled", now)
                    self._refunds.add(step_id)
        return self._change(ding_id, user_id)

    async def mark_read(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        row = self._recipients.get(ding_id, {}).get(user_id)
        if row is None:
            return None
        if row.read_at is None:
            delivered = row.delivered_at if row.delivered_at is not None else now
            self._set_recipient(ding_id, user_id, read_at=now, delivered_at=delivered)
        return self._change(ding_id, user_id)

    async def mark_delivered(
        self, ding_id: int, user_ids: Sequence[int], *, now: int
    ) -> list[StepChange]:
        rows = self._recipients.get(ding_id, {})
        changed: list[int] = []
        for user in dict.fromkeys(user_ids):
            row = rows.get(user)
            if row is not None and row.delivered_at is None:
                self._set_recipient(ding_id, user, delivered_at=now)
                changed.append(user)
        return [self._change(ding_id, user) for user in changed]

    async def cancel(self, ding_id: int, *, now: int) -> Ding | None:
        ding = self._dings.get(ding_id)
        if ding is None or ding.state != "scheduled":
            return None
        self._dings[ding_id] = replace(ding, state="cancelled")
        for user in self._recipients[ding_id]:
            for step_id in self._steps_of[(ding_id, user)]:
                if self._steps[step_id].state == "scheduled":
                    self._cancel_scheduled(self._steps[step_id], now)
        return self._ding(ding_id)

    async def redding(
        self, ding_id: int, *, expect_round: int, now: int, steps: Sequence[NewStep]
    ) -> Ding | None:
        ding = self._dings.get(ding_id)
        if ding is None or ding.state != "sent" or ding.round != expect_round:
            return None
        rows = self._recipients[ding_id]
        users = {s.user_id for s in steps}
        if not users <= rows.keys():
            raise ValueError("a re-DING step names no recipient of the DING")
        for user in users:
            for step_id in self._steps_of[(ding_id, user)]:
                if self._steps[step_id].state == "scheduled":
                    self._cancel_scheduled(self._steps[step_id], now)
        self._dings[ding_id] = replace(ding, round=expect_round + 1, round_at=now)
        for step in steps:
            self._add_step(ding_id, step, round_=expect_round + 1, now=now)
        return self._ding(ding_id)

    # --- the outbox ----------------------------------------------------------------------------

    async def claim_outbox(self, *, now: int, limit: int) -> list[OutboxItem]:
        ready = sorted(
            (
                row
                for row in self._outbox.values()
                if not row.claimed and row.next_attempt_at <= now
            ),
            key=lambda row: (row.next_attempt_at, row.step_id),
        )[: max(limit, 0)]
        items = []
        for row in ready:
            row.claimed = True
            step = self._steps[row.step_id]
            ding = self._dings[step.ding_id]
            assert step.channel != "in_app"
            items.append(
                OutboxItem(
                    step_id=step.step_id,
                    ding_id=ding.ding_id,
                    sender=ding.sender,
                    user_id=step.user_id,
                    channel=step.channel,
                    text=ding.text,
                    idempotency_key=row.key,
                    attempts=row.attempts,
                    next_attempt_at=row.next_attempt_at,
                )
            )
        return items

    async def next_outbox_attempt(self) -> int | None:
        times = [row.next_attempt_at for row in self._outbox.values() if not row.claimed]
        return min(times) if times else None

    async def outbox_sent(self, step_id: int, *, now: int) -> StepChange | None:
        return self._finish(step_id, "sent", now)

    async def outbox_failed(
        self, step_id: int, *, now: int, refund: bool = False
    ) -> StepChange | None:
        change = self._finish(step_id, "failed", now)
        if change is not None and refund:
            self._refunds.add(step_id)
        return change

    def _finish(self, step_id: int, state: StepStateName, now: int) -> StepChange | None:
        if self._outbox.pop(step_id, None) is None:
            return None
        step = self._move(self._steps[step_id], state, now)
        return self._change(step.ding_id, step.user_id)

    async def outbox_retry(
        self, step_id: int, *, next_attempt_at: int, now: int
    ) -> StepChange | None:
        row = self._outbox.get(step_id)
        if row is None:
            return None
        step = self._steps[step_id]
        if self._recipients[step.ding_id][step.user_id].confirmed_at is not None:
            # G1: the recipient confirmed while this attempt was with the provider, which did
            # not take it: no further attempt. Withdrawn and refunded, as by ``confirm``.
            del self._outbox[step_id]
            self._move(step, "cancelled", now)
            self._refunds.add(step_id)
            return self._change(step.ding_id, step.user_id)
        row.attempts += 1
        row.next_attempt_at = next_attempt_at
        row.claimed = False
        return self._change(step.ding_id, step.user_id)

    async def release_claims(self) -> int:
        claimed = [row for row in self._outbox.values() if row.claimed]
        for row in claimed:
            row.claimed = False
        return len(claimed)

    # --- G2 across databases: charges keyed by step, refunds owed -------------------------------

    async def charge_step(self, key: str, charge: QuotaCharge, *, now: int) -> ChargeOutcome:
        recorded = self._charges.get(key)
        if recorded is not None:
            if recorded.state in ("paid", "refunded"):
                return "paid"
            return "exhausted" if recorded.state == "exhausted" else "void"
        outcome: ChargeOutcome = "paid" if self._charge(charge) else "exhausted"
        self._charges[key] = _Charge(state=outcome, charge=charge)
        return outcome

    async def refund_charge(self, key: str, *, now: int) -> bool:
        recorded = self._charges.get(key)
        if recorded is None:
            self._charges[key] = _Charge(state="void", charge=None)
            return False
        if recorded.state != "paid" or recorded.charge is None:
            return False
        self._refund(recorded.charge)
        recorded.state = "refunded"
        return True

    async def refunds_owed(self, *, limit: int) -> list[tuple[int, str]]:
        owed = []
        for step_id in sorted(self._refunds)[: max(limit, 0)]:
            step = self._steps.get(step_id)
            ding = None if step is None else self._dings.get(step.ding_id)
            owed.append((step_id, "" if ding is None else ding.payer))
        return owed

    async def refunds_settled(self, step_ids: Sequence[int]) -> None:
        self._refunds.difference_update(step_ids)

    # --- effects on other stores (D4) -----------------------------------------------------------

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingDingEffect]:
        found = sorted(i for i in self._effects if i > after)[: max(limit, 0)]
        return [
            PendingDingEffect(
                effect_id=effect_id,
                kind=self._effects[effect_id][1],
                ding_id=self._effects[effect_id][0],
                ding=self._dings.get(self._effects[effect_id][0]),
            )
            for effect_id in found
        ]

    async def finish_effect(self, effect_id: int) -> None:
        self._effects.pop(effect_id, None)

    async def delete_org_chunk(self, org_id: int, *, limit: int) -> int:
        prefix, account = f"org:{org_id}/", f"org:{org_id}"
        limit = max(limit, 1)
        ids = sorted(i for i, d in self._dings.items() if d.payer.startswith(prefix))[:limit]
        deleted = 0
        gone = set(ids)
        for effect_id in [e for e, (ding_id, _) in self._effects.items() if ding_id in gone]:
            del self._effects[effect_id]
        for ding_id in ids:
            ding = self._dings.pop(ding_id)
            self._cmids.pop((ding.sender, ding.cmid), None)
            self._by_sender[ding.sender].remove(ding_id)
            for user in self._recipients.pop(ding_id):
                self._by_recipient[user].remove(ding_id)
                for step_id in self._steps_of.pop((ding_id, user)):
                    step = self._steps.pop(step_id)
                    if step.state == "scheduled":
                        index = bisect.bisect_left(self._scheduled, (step.due_at, step_id))
                        del self._scheduled[index]
                    self._outbox.pop(step_id, None)
                    self._refunds.discard(step_id)
                    deleted += 1
                deleted += 1
            deleted += 1
        if ids:
            return deleted
        # Then its package (G2), a chunk at a time.
        charges = [k for k, c in self._charges.items() if c.charge and c.charge.account == account]
        for key in charges[:limit]:
            del self._charges[key]
        if charges:
            return min(len(charges), limit)
        balances = [k for k in self._quota if k[0] == account][:limit]
        for quota_key in balances:
            del self._quota[quota_key]
        self._topups.forget_results(set(balances))
        return len(balances)

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, ding_id: int) -> Ding | None:
        return self._ding(ding_id) if ding_id in self._dings else None

    async def list_sent(self, sender: int, *, before: int | None, limit: int) -> list[Ding]:
        ids = self._by_sender.get(sender, [])
        return [self._ding(i) for i in _newest_before(ids, before, limit)]

    async def list_received(self, user_id: int, *, before: int | None, limit: int) -> list[Ding]:
        ids = [i for i in self._by_recipient.get(user_id, []) if self._dings[i].state == "sent"]
        return [self._ding(i) for i in _newest_before(ids, before, limit)]

    async def pending_steps(
        self, *, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        start = 0 if after is None else bisect.bisect_right(self._scheduled, after)
        return self._scheduled[start : start + max(limit, 0)]

    async def steps(self, step_ids: Sequence[int]) -> list[DingStep]:
        return [self._steps[i] for i in sorted(set(step_ids)) if i in self._steps]

    async def payers(self, ding_ids: Sequence[int]) -> dict[int, str]:
        return {i: self._dings[i].payer for i in set(ding_ids) if i in self._dings}

    async def quota_balance(
        self, account: str, channel: ChannelName, period: str
    ) -> QuotaBalance | None:
        balance = self._quota.get((account, channel, period))
        if balance is None:
            return None
        return QuotaBalance(
            account=account,
            channel=channel,
            period=period,
            granted=balance.granted,
            used=balance.used,
            by_member={m: n for m, n in balance.by_member.items() if n},
        )

    async def top_up(
        self,
        account: str,
        channel: ChannelName,
        period: str,
        *,
        units: int,
        idempotency: IdempotencyKey | None = None,
    ) -> TopUp:
        if units < 0:
            raise ValueError("units must not be negative")
        original = self._topups.lookup(idempotency)
        if original is not None:
            current = await self.quota_balance(*original)
            assert current is not None
            return TopUp(balance=current, duplicate=True)
        balance = self._quota.setdefault((account, channel, period), _Balance(granted=0))
        balance.granted += units
        self._topups.record(idempotency, (account, channel, period), now=0)
        result = await self.quota_balance(account, channel, period)
        assert result is not None
        return TopUp(balance=result)


def _newest_before(ids: list[int], before: int | None, limit: int) -> list[int]:
    """``ids`` is ascending: the ``limit`` largest below ``before``, descending."""
    end = len(ids) if before is None else bisect.bisect_left(ids, before)
    return ids[max(end - max(limit, 0), 0) : end][::-1]
