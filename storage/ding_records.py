"""Frozen records of DING messages (G1-G3) that a ``DingStore`` takes and returns.

A DING has recipients; each recipient has steps, one per channel and round: the in-app
delivery, then optionally an SMS and a call. Times are integer ms since the epoch (wall
clock). ``STEP_TRANSITIONS`` is the whole life of a step in one table (``docs/ding.md``).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

DingStateName = Literal["scheduled", "sent", "cancelled"]
#: Which kind of store keeps a DING (D2/D3): the cross-domain store, or the organisation
#: DING store (one organisation's internal DINGs; the id prefix is ``x`` or ``o``).
DingDomain = Literal["cross", "org"]
#: What charging a step did, recorded in the database that keeps the payer's account
#: (``DingStore.charge_step``): a unit taken, none left, or the step was refunded (or
#: written off) before it was charged, so it never will be.
ChargeOutcome = Literal["paid", "exhausted", "void"]
ChannelName = Literal["in_app", "sms", "call"]
StepStateName = Literal[
    "scheduled", "handed_over", "sent", "failed", "cancelled", "quota_exhausted"
]

#: Order in which steps due at the same time are handed over: a scheduled DING's in-app
#: step releases it before its SMS or call can start.
CHANNEL_ORDER: Final[dict[ChannelName, int]] = {"in_app": 0, "sms": 1, "call": 2}

#: Every transition a step may make, and the store method that makes it:
#:
#: * scheduled -> sent (``hand_over``, in-app: the DING is released to the recipient)
#: * scheduled -> handed_over (``hand_over``, SMS/call: quota charged, outbox row written)
#: * scheduled -> quota_exhausted (``hand_over``: the payer's quota is used up)
#: * scheduled -> cancelled (``confirm``, ``cancel``, ``redding`` superseding the round)
#: * handed_over -> sent (``outbox_sent``: the provider accepted it)
#: * handed_over -> failed (``outbox_failed``: refused, or retries used up)
#: * handed_over -> cancelled (``confirm``: withdrawn from the outbox before the relay took
#:   it; its quota unit is given back)
STEP_TRANSITIONS: Final[dict[StepStateName, frozenset[StepStateName]]] = {
    "scheduled": frozenset({"sent", "handed_over", "quota_exhausted", "cancelled"}),
    "handed_over": frozenset({"sent", "failed", "cancelled"}),
    "sent": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "quota_exhausted": frozenset(),
}


class DingStep(msgspec.Struct, frozen=True, kw_only=True):
    step_id: int
    ding_id: int
    user_id: int
    channel: ChannelName
    round: int
    due_at: int
    state: StepStateName
    changed_at: int | None = None


class DingRecipient(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    delivered_at: int | None = None
    read_at: int | None = None
    confirmed_at: int | None = None
    #: Every step of every round, in step id order.
    steps: tuple[DingStep, ...] = ()


class Ding(msgspec.Struct, frozen=True, kw_only=True):
    ding_id: int
    sender: int
    #: Who pays for SMS and call steps (G2): ``user:<id>`` for a personal sender.
    payer: str
    #: The content. Through sealed stores (A3, ``storage.sealing``) it is the opened text, or
    #: "" once the key it was sealed with is destroyed (the protocol never accepts an empty
    #: text, so "" means erased); in a store underneath it is "" when ``sealed`` is set.
    text: str
    cmid: str
    state: DingStateName
    created_at: int
    #: When the DING goes (or went) out: ``created_at`` unless it was scheduled.
    send_at: int
    sms_after_s: int | None
    call_after_s: int | None
    #: The current round (1, then one more per re-DING) and when it went out.
    round: int
    round_at: int
    recipients: tuple[DingRecipient, ...] = ()
    #: A3: the text sealed at rest, as the store keeps it (None: ``text`` is kept in plain).
    #: Only the sealing wrapper sets and reads it; the server never sees it set.
    sealed: bytes | None = None
    #: The kind of store that keeps it (set by the store: each knows its own).
    domain: DingDomain = "cross"

    def recipient(self, user_id: int) -> DingRecipient | None:
        for row in self.recipients:
            if row.user_id == user_id:
                return row
        return None


class NewStep(msgspec.Struct, frozen=True, kw_only=True):
    """A step to create: ``state`` is ``scheduled``, or ``sent`` for an in-app step that goes
    out with the write that creates it."""

    user_id: int
    channel: ChannelName
    due_at: int
    state: Literal["scheduled", "sent"] = "scheduled"


class NewDing(msgspec.Struct, frozen=True, kw_only=True):
    sender: int
    payer: str
    text: str
    cmid: str
    #: Tells a resend with the same (sender, cmid) from a different request.
    fingerprint: bytes
    state: Literal["scheduled", "sent"]
    created_at: int
    send_at: int
    sms_after_s: int | None
    call_after_s: int | None
    recipients: tuple[int, ...]
    steps: tuple[NewStep, ...]
    #: A3: the text sealed by the sealing wrapper (``text`` is then ""): the store keeps these
    #: bytes as they are and gives them back in ``Ding.sealed``.
    sealed: bytes | None = None
    #: D4: effects on other stores to carry out after the DING commits (``org_copy:<orgs>``,
    #: ``server.outbox.org_copy_effect``), recorded in the DING's own transaction and read
    #: back with ``DingStore.pending_effects`` (a duplicate resend records none).
    effects: tuple[str, ...] = ()


class PendingDingEffect(msgspec.Struct, frozen=True, kw_only=True):
    """An effect recorded with a DING and not yet carried out (D4), with the DING as it is
    now: its header only (no recipients: nothing of them goes to an organisation), None if
    it was deleted since (O4)."""

    effect_id: int
    kind: str
    ding_id: int
    ding: Ding | None


class DingCreated(msgspec.Struct, frozen=True, kw_only=True):
    ding: Ding
    #: True when (sender, cmid) was used before: ``ding`` is the original, nothing written.
    duplicate: bool = False


class QuotaCharge(msgspec.Struct, frozen=True, kw_only=True):
    """What one SMS or call step costs, decided by the server's quota ledger (G2): one unit
    of ``account``'s balance for ``channel`` in ``period``, consumed by ``member``. A period
    seen for the first time starts with ``grant`` units (a monthly allowance; 0 for a
    package that only top-ups fill)."""

    account: str
    channel: ChannelName
    period: str
    grant: int
    member: int


class StepCharge(msgspec.Struct, frozen=True, kw_only=True):
    """The charge of one SMS or call step and its recorded outcome
    (``DingStore.charge_step``), handed to ``DingStore.hand_over``."""

    charge: QuotaCharge
    outcome: ChargeOutcome


class QuotaBalance(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    channel: ChannelName
    period: str
    granted: int
    used: int
    #: Units used per member (user id -> units), for the payer's records.
    by_member: dict[int, int] = msgspec.field(default_factory=dict)


class TopUp(msgspec.Struct, frozen=True, kw_only=True):
    """What ``DingStore.top_up`` did: the balance after it, and whether the idempotency key
    was seen before (then nothing was added and ``balance`` is the balance as it is now)."""

    balance: QuotaBalance
    duplicate: bool = False


class StepChange(msgspec.Struct, frozen=True, kw_only=True):
    """What a write did to one recipient: the DING after it and the recipient's row."""

    ding: Ding
    user_id: int

    @property
    def recipient(self) -> DingRecipient:
        row = self.ding.recipient(self.user_id)
        assert row is not None
        return row


class HandOver(msgspec.Struct, frozen=True, kw_only=True):
    """What ``hand_over`` did: the steps it moved on, with their recipient's row after it,
    and the DINGs it released (scheduled -> sent)."""

    changed: tuple[tuple[DingStep, StepChange], ...] = ()
    released: tuple[int, ...] = ()


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    """An SMS or call step in the outbox, for the relay: everything it needs to call the
    Notifier except the recipient's phone number (which stays in the personal store)."""

    step_id: int
    ding_id: int
    sender: int
    user_id: int
    channel: Literal["sms", "call"]
    text: str
    #: Stable for the step: every attempt, before or after a restart, carries the same key.
    idempotency_key: str
    attempts: int
    next_attempt_at: int


def domain_prefix(domain: DingDomain) -> str:
    """``x`` for the cross-domain store, ``o`` for the organisation DING store."""
    return "x" if domain == "cross" else "o"


def step_idempotency_key(
    *, ding_id: int, step_id: int, created_at: int, domain: DingDomain = "cross"
) -> str:
    """The provider's idempotency key of a step: derived from stored values only, so it is
    the same on every attempt, with the store in it (``x`` or ``o``: step numbers of two
    stores never collide), and with the DING's creation time in it, so a data directory
    started afresh (ids from 1 again) never repeats a key the provider has seen."""
    return f"rivet-ding-{domain_prefix(domain)}{ding_id}-s{step_id}-{created_at}"


def charge_key(domain: DingDomain, step_id: int) -> str:
    """G2: the key of a step's charge in the payer's database: the DING's store and the
    step, so each step is charged at most once whichever database keeps the account."""
    return f"{domain_prefix(domain)}:{step_id}"
