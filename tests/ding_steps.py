"""What the DING runtime does around ``DingStore.hand_over`` (G2 across databases), for
tests that drive a store directly: charge each due SMS or call step once, keyed by its store
and step, in the store that keeps the payer's account, then hand over with the recorded
outcomes; and carry out the refunds a store owes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from storage.ding import DingStore
from storage.ding_records import (
    ChannelName,
    DingDomain,
    HandOver,
    QuotaCharge,
    StepCharge,
    charge_key,
)


async def charge_due(
    store: DingStore,
    step_ids: Sequence[int],
    *,
    now: int,
    charges: Mapping[tuple[str, ChannelName], QuotaCharge],
    domain: DingDomain = "cross",
    payer_store: DingStore | None = None,
) -> dict[int, StepCharge]:
    """The first half of a hand-over: ``charges[(payer, channel)]`` for each scheduled SMS
    or call step among ``step_ids``, charged in ``payer_store`` (default: ``store``)."""
    steps = [
        s for s in await store.steps(step_ids) if s.state == "scheduled" and s.channel != "in_app"
    ]
    payers = await store.payers(sorted({s.ding_id for s in steps}))
    charged: dict[int, StepCharge] = {}
    for step in steps:
        charge = charges[(payers[step.ding_id], step.channel)]
        outcome = await (payer_store or store).charge_step(
            charge_key(domain, step.step_id), charge, now=now
        )
        charged[step.step_id] = StepCharge(charge=charge, outcome=outcome)
    return charged


async def hand_over(
    store: DingStore,
    step_ids: Sequence[int],
    *,
    now: int,
    charges: Mapping[tuple[str, ChannelName], QuotaCharge],
    domain: DingDomain = "cross",
    payer_store: DingStore | None = None,
) -> HandOver:
    """Charge, then hand over (both halves, as ``DingRuntime.fire`` does)."""
    charged = await charge_due(
        store, step_ids, now=now, charges=charges, domain=domain, payer_store=payer_store
    )
    return await store.hand_over(step_ids, now=now, charged=charged)


async def settle_refunds(
    store: DingStore,
    *,
    now: int,
    domain: DingDomain = "cross",
    payer_store: DingStore | None = None,
) -> int:
    """Carry out the refunds ``store`` owes in ``payer_store`` (default: ``store``)."""
    owed = await store.refunds_owed(limit=1000)
    given = 0
    for step_id, _payer in owed:
        given += await (payer_store or store).refund_charge(charge_key(domain, step_id), now=now)
    await store.refunds_settled([step_id for step_id, _ in owed])
    return given
