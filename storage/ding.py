"""``DingStore``: where DING messages, their escalation steps, the SMS/call outbox and the
quota ledger live (G1-G3). Records are in ``storage.ding_records``.

There are two: the cross-domain DINGs (D3) in the cross-domain database (``cross.db``,
with the personal users' monthly allowances), and the organisations' internal DINGs with
their DING packages (D2) in the organisation conversations database
(``organisation-conversations.db``), behind this same interface (``Stores.ding`` and
``Stores.org_ding``). Every implementation runs ``tests/storage/test_ding_conformance.py``.

Contracts, beyond those of ``storage.interfaces`` (one transaction per method, durable
before it returns, nothing stored if it raises, a cancelled write may still commit):

* **The transactional outbox.** ``hand_over`` moves a due SMS or call step to
  ``handed_over`` and writes its outbox row in the same transaction; the row leaves the
  outbox only with the step's next state (``outbox_sent``, ``outbox_failed``, or a
  ``confirm`` or ``outbox_retry`` that withdraws it). So a step is never handed over
  without its row, and a row is never lost: after a crash, ``release_claims`` makes every
  row claimable again.
* **Confirm stops escalation.** ``confirm`` cancels the recipient's scheduled steps and
  withdraws their unclaimed outbox rows in its transaction; ``hand_over`` only moves
  ``scheduled`` steps. Once ``confirm`` has returned, no step of that recipient is handed
  over, and only a row a relay had already claimed can still reach the provider (and a
  failed attempt of it is not retried: ``outbox_retry`` withdraws it).
* **Quota, across databases.** The account that pays may be in another database than the
  DING (a cross-domain DING paid by an organisation's package). So a step is charged first,
  by ``charge_step`` in the payer's database: an idempotent write keyed by the DING's store
  and the step (``charge_key``) that records the outcome (``paid`` or ``exhausted``);
  ``hand_over`` then records the step's state from that known outcome, with its outbox row,
  in the DING's database. A crash between the two fires the step again and ``charge_step``
  answers the recorded outcome: one unit per step at most. A step that may have been
  charged and ends without reaching the provider (withdrawn by a confirm; cancelled after
  it fell due; found cancelled by its hand-over) is written to ``ding_refunds`` in that
  transaction; the runtime carries the refund out with ``refund_charge`` (idempotent by the
  same key; a key never charged is made ``void`` so it never will be) and then
  ``refunds_settled``.
* **Effects on other stores (D4).** ``create`` records ``NewDing.effects`` (the
  organisations the sender belongs to) in the DING's transaction; the server's outbox relay
  reads them with ``pending_effects`` and forgets each with ``finish_effect`` only after it
  was carried out, so a crash in between repeats it (copies are keyed by their source).
* **Content at rest (A3).** A store keeps ``NewDing.sealed`` as given and returns it in
  ``Ding.sealed`` (with ``text`` as given, "" when sealed); sealing and opening is the
  wrapper's (``storage.sealing.SealedDingStore``), which is what the server holds.
* Stores decide nothing: who may DING whom, which plan and which payer are decided by the
  server (``server.policy``, ``server.ding``); the checks here are integrity ones
  (idempotency, the state a transition starts from, the quota balance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from storage.ding_records import (
    ChannelName,
    ChargeOutcome,
    Ding,
    DingCreated,
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
    TopUp,
)
from storage.records import IdempotencyKey


class DingStore(Protocol):
    async def create(self, new: NewDing) -> DingCreated:
        """Store a DING with its recipients and steps. A (sender, cmid) seen before returns
        the original with ``duplicate=True`` and writes nothing, or raises
        ``IdempotencyConflict`` if its fingerprint differs."""

    async def get(self, ding_id: int) -> Ding | None: ...

    async def list_sent(self, sender: int, *, before: int | None, limit: int) -> list[Ding]:
        """The sender's DINGs with ``ding_id < before`` (all when None), newest first."""

    async def list_received(self, user_id: int, *, before: int | None, limit: int) -> list[Ding]:
        """DINGs in state ``sent`` that have ``user_id`` as a recipient, with
        ``ding_id < before``, newest first."""

    async def pending_steps(
        self, *, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        """(due_at, step_id) of ``scheduled`` steps, ascending, after the pair ``after``:
        pages through everything the scheduler must wait for (after a restart too)."""

    async def steps(self, step_ids: Sequence[int]) -> list[DingStep]:
        """The steps that exist among ``step_ids``, in step id order."""

    async def payers(self, ding_ids: Sequence[int]) -> dict[int, str]:
        """The payer of each DING that exists among ``ding_ids``."""

    async def hand_over(
        self,
        step_ids: Sequence[int],
        *,
        now: int,
        charged: Mapping[int, StepCharge],
    ) -> HandOver:
        """Move each of ``step_ids`` that is still ``scheduled``, in (due_at, channel, step id)
        order: an in-app step to ``sent`` (releasing its DING if it was ``scheduled``); an SMS
        or call step of a confirmed recipient or of a cancelled DING (or whose charge is
        ``void``) to ``cancelled``; any other SMS or call step by its recorded charge
        ``charged[step_id]`` (``ValueError`` if it has none): ``paid`` -> ``handed_over``
        with its outbox row (due at ``now``), ``exhausted`` -> ``quota_exhausted``. Steps in
        other states are left alone (a timer that fires late or twice is harmless). Every
        ``paid`` step of ``charged`` that is ``cancelled`` after it is owed a refund
        (``refunds_owed``)."""

    async def confirm(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        """Record the recipient's confirmation (and delivery and reading, if not yet), cancel
        their ``scheduled`` steps and withdraw their unclaimed outbox rows (those steps become
        ``cancelled``; a refund is owed for each withdrawn one and each SMS or call step that
        had fallen due). None if ``user_id`` is no recipient of the DING. Confirming twice
        keeps the first time and changes nothing."""

    async def mark_read(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        """Set ``read_at`` (and ``delivered_at``) if not set. None if no such recipient."""

    async def mark_delivered(
        self, ding_id: int, user_ids: Sequence[int], *, now: int
    ) -> list[StepChange]:
        """Set ``delivered_at`` of each recipient among ``user_ids`` that has none; returns
        the recipients that changed."""

    async def cancel(self, ding_id: int, *, now: int) -> Ding | None:
        """A ``scheduled`` DING becomes ``cancelled`` with every scheduled step. None if the
        DING does not exist or is not ``scheduled`` (it went out, or was cancelled)."""

    async def redding(
        self, ding_id: int, *, expect_round: int, now: int, steps: Sequence[NewStep]
    ) -> Ding | None:
        """Start round ``expect_round + 1`` at ``now``: cancel the ``scheduled`` steps of the
        recipients ``steps`` name and add ``steps`` to that round. None if the DING is not in
        round ``expect_round`` and ``sent`` (another re-DING won the race)."""

    # the outbox of SMS and call steps

    async def claim_outbox(self, *, now: int, limit: int) -> list[OutboxItem]:
        """Claim up to ``limit`` unclaimed rows with ``next_attempt_at <= now``, oldest
        first. A claimed row is the relay's until it reports the outcome."""

    async def next_outbox_attempt(self) -> int | None:
        """The earliest ``next_attempt_at`` of an unclaimed row, or None."""

    async def outbox_sent(self, step_id: int, *, now: int) -> StepChange | None:
        """The provider accepted the step: delete its row, step -> ``sent``. None if the row
        is gone."""

    async def outbox_retry(
        self, step_id: int, *, next_attempt_at: int, now: int
    ) -> StepChange | None:
        """A transient failure: count the attempt and release the claim until
        ``next_attempt_at``. If the step's recipient has confirmed (while this attempt was
        with the provider), no further attempt is made instead: the row is deleted, the step
        becomes ``cancelled`` and a refund of its unit is owed, as when ``confirm`` withdraws
        an unclaimed row (G1). None if the row is gone."""

    async def outbox_failed(
        self, step_id: int, *, now: int, refund: bool = False
    ) -> StepChange | None:
        """The provider refused the step for good: delete its row, step -> ``failed`` (the
        unit stays used: the provider may have charged it). With ``refund`` (the step never
        reached a provider, e.g. the recipient has no phone number) a refund of its unit is
        owed, in the same transaction. None if the row is gone."""

    async def release_claims(self) -> int:
        """Release every claim (at start: the relay that held them is gone); returns how
        many."""

    # the quota ledger (G2)

    async def charge_step(self, key: str, charge: QuotaCharge, *, now: int) -> ChargeOutcome:
        """Charge one unit of ``charge`` for the step ``key`` (``charge_key``), once: the
        first call takes the unit (the balance created with its grant on first use) or finds
        none left, and records that; every later call answers the recorded outcome and
        changes nothing (a refunded charge answers ``paid``; a key ``refund_charge`` made
        ``void`` answers ``void``)."""

    async def refund_charge(self, key: str, *, now: int) -> bool:
        """Give back the unit charged for ``key``, once; True if a unit was given back. A key
        never charged is recorded ``void``: a later ``charge_step`` charges nothing."""

    async def refunds_owed(self, *, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (step id, payer) of refunds owed for this store's steps, in step
        order (payer "" if the DING is gone)."""

    async def refunds_settled(self, step_ids: Sequence[int]) -> None:
        """The refunds of ``step_ids`` were carried out: forget them."""

    # effects on other stores (D4: an organisation's copy of a DING's text)

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingDingEffect]:
        """Up to ``limit`` effects recorded with DINGs (``NewDing.effects``, in the DING's
        own transaction) and not finished, with ``effect_id > after``, ascending, each with
        its DING's header as it is now (None if the DING was deleted)."""

    async def finish_effect(self, effect_id: int) -> None:
        """The effect was carried out: forget it (finishing it again changes nothing)."""

    async def delete_org_chunk(self, org_id: int, *, limit: int) -> int:
        """O4, for the organisation DING store: delete up to ``limit`` of the DINGs paid by
        organisation ``org_id`` (payer ``org:<org>/...``: in this store, its internal DINGs)
        with their recipients, steps, outbox rows, owed refunds and pending effects; once
        none is left, its package (the account ``org:<org>``: balances, use per member,
        top-ups, charges), a chunk at a time. Returns the rows deleted: 0 when nothing is
        left. Idempotent and resumable. (Never called on the cross-domain store: a
        cross-domain DING an organisation paid for stays with its participants.)"""

    async def quota_balance(
        self, account: str, channel: ChannelName, period: str
    ) -> QuotaBalance | None: ...

    async def top_up(
        self,
        account: str,
        channel: ChannelName,
        period: str,
        *,
        units: int,
        idempotency: IdempotencyKey | None = None,
    ) -> TopUp:
        """Add ``units`` to the balance of ``account`` for ``channel`` in ``period`` (an
        organisation's package bought by its admins), creating it with 0 granted first.

        With ``idempotency`` (the admin and the request's ``cmid``), a key seen before adds
        nothing and returns the balance as it is now with ``duplicate=True``, or raises
        ``IdempotencyConflict`` if its fingerprint differs. The key is recorded in the
        top-up's transaction and kept as long as the balance (a record of each purchase)."""
