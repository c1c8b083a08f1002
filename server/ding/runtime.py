"""The DING machinery of one server process: durable escalation timers, the hand-over of
due steps, the outbox relay, and the events that tell senders and recipients (G1-G3).

There are two DING stores (D2/D3): the cross-domain one and the organisation DING store
(``Stores.org_ding``). ``run`` owns, for the server's lifetime: the ``Scheduler`` (one heap
of every scheduled step of both stores, keyed by (store, step id), loaded from both at
start), one ``OutboxRelay`` per store, and the refund task. When steps fall due, ``fire``
charges each SMS or call step in the database that keeps its payer's account
(``DingStore.charge_step``, idempotent by store and step), then hands the steps over in one
transaction of the DING's store (``DingStore.hand_over``: state change with the recorded
charge outcome, and outbox row), wakes that store's relay, and publishes what changed. A
crash anywhere loses nothing and charges nothing twice: the stores have the steps, the
charges and the outbox, and the next start loads them (``docs/ding.md`` states the
guarantees).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec
import trio

from server.background import REFUSED, Outage
from server.bus import Bus, Deliver
from server.clock import Clock
from server.config import Config
from server.ding.limits import RecipientLimits
from server.ding.plan import Plan
from server.ding.quota import Ledgers, OrgPackages, PersonalAllowance, QuotaLedger, payer_org
from server.ding.relay import AccountOf, OutboxRelay, RelayOptions
from server.ding.render import ding_event, status_event
from server.notify.interface import Notifier
from server.scheduler import Scheduler
from storage.ding import DingStore
from storage.ding_records import (
    Ding,
    DingDomain,
    DingStep,
    StepChange,
    StepCharge,
    charge_key,
)
from storage.interfaces import PersonalStore
from storage.stores import Stores

log = logging.getLogger(__name__)

#: Scheduled steps read from the store per page when loading the heap.
LOAD_PAGE = 10_000
#: Refunds carried out per round, and the longest wait between two rounds (they are also
#: started at once whenever a write may have owed one).
REFUND_PAGE = 500
REFUND_EVERY_SECONDS = 60.0

#: A timer: the store that keeps the step, and the step's id there.
StepKey = tuple[DingDomain, int]
#: Whether an organisation still exists (not dissolving, O4): its package pays only then.
OrgAlive = Callable[[int], Awaitable[bool]]

Publish = Callable[[Iterable[int], msgspec.Struct], None]
_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class DingSettings:
    #: The plan of a DING sent without one.
    default_plan: Plan
    #: G3: a re-DING at most this often (ms).
    redding_interval_ms: int


class DingRuntime:
    def __init__(
        self,
        *,
        store: DingStore,
        personal: PersonalStore,
        account_of: AccountOf,
        notifier: Notifier,
        clock: Clock,
        publish: Publish,
        is_online: Callable[[int], bool],
        ledger: QuotaLedger,
        limits: RecipientLimits,
        settings: DingSettings,
        max_sleep: float = 1.0,
        relay_options: RelayOptions | None = None,
        org_store: DingStore | None = None,
        org_alive: OrgAlive | None = None,
    ) -> None:
        #: The cross-domain DING store (D3; personal allowances too).
        self.store = store
        #: The organisation DING store (D2: organisations' internal DINGs and packages).
        self.org_store = org_store
        self.stores: dict[DingDomain, DingStore] = {"cross": store}
        if org_store is not None:
            self.stores["org"] = org_store
        self.clock = clock
        self.ledger = ledger
        self.limits = limits
        self.settings = settings
        self._publish = publish
        self._is_online = is_online
        self._org_alive = org_alive
        self.scheduler: Scheduler[StepKey] = Scheduler(
            clock, self.fire, max_sleep=max_sleep, name="DING timers"
        )
        #: One outbox relay per store (each store's outbox is in its own database).
        self.relays = {
            domain: OutboxRelay(
                store=each,
                personal=personal,
                account_of=account_of,
                notifier=notifier,
                clock=clock,
                on_change=self.publish_change,
                on_refund=self.refunds_due,
                options=relay_options,
                name=f"DING relay ({domain})",
            )
            for domain, each in self.stores.items()
        }
        self.relay = self.relays["cross"]
        self._refunds_due = trio.Event()
        #: Refunds carried out so far (G2), for tests and metrics.
        self.refunded = 0

    @classmethod
    def from_config(
        cls,
        config: Config,
        stores: Stores,
        *,
        clock: Clock,
        notifier: Notifier,
        bus: Bus,
        is_online: Callable[[int], bool],
    ) -> DingRuntime:
        """The runtime of a server with this configuration (negative default delays: no
        such step in the default plan)."""

        def publish(users: Iterable[int], event: msgspec.Struct) -> None:
            bus.publish(users, Deliver(_encoder.encode(event)))

        async def org_alive(org_id: int) -> bool:
            org = await stores.orgs.get_org(org_id)
            return org is not None and org.dissolving_at is None

        sms, call = config.ding_sms_after_seconds, config.ding_call_after_seconds
        return cls(
            store=stores.ding,
            org_store=stores.org_ding,
            org_alive=org_alive,
            personal=stores.personal,
            # G1 with P5: an enterprise account's DING SMS and calls go to its contact phone.
            account_of=stores.orgs.account_of_user,
            notifier=notifier,
            clock=clock,
            publish=publish,
            is_online=is_online,
            ledger=Ledgers(
                personal=PersonalAllowance(
                    sms=config.ding_personal_sms_per_month,
                    calls=config.ding_personal_calls_per_month,
                    timezone=config.ding_quota_timezone,
                ),
                packages=OrgPackages(),
            ),
            limits=RecipientLimits(
                per_minute=config.ding_recipient_per_minute, burst=config.ding_recipient_burst
            ),
            settings=DingSettings(
                default_plan=Plan(
                    sms_after_s=sms if sms >= 0 else None,
                    call_after_s=call if call >= 0 else None,
                ),
                redding_interval_ms=int(config.ding_redding_interval_seconds * 1000),
            ),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the pending steps, start the relay, and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.scheduler.run, self._load_pending)
            for relay in self.relays.values():
                await nursery.start(relay.run)
            nursery.start_soon(self._run_refunds)
            task_status.started()

    async def _load_pending(self) -> AsyncIterator[tuple[int, StepKey]]:
        for domain, store in self.stores.items():
            after: tuple[int, int] | None = None
            while True:
                page = await store.pending_steps(after=after, limit=LOAD_PAGE)
                for due_at, step_id in page:
                    yield due_at, (domain, step_id)
                if len(page) < LOAD_PAGE:
                    break
                after = page[-1]

    def store_of(self, ding: Ding) -> DingStore:
        """The store that keeps ``ding``."""
        return self.stores[ding.domain]

    def payer_store(self, payer: str) -> DingStore:
        """G2: the store whose database keeps ``payer``'s account: an organisation's package
        in the organisation DING store, a personal allowance in the cross-domain one."""
        if payer_org(payer) is not None and self.org_store is not None:
            return self.org_store
        return self.store

    def gauges(self) -> dict[str, tuple[str, float]]:
        """G1-G3 for ``/metrics``: pending timers, steps with a provider now, and totals."""
        timers = self.scheduler.statistics()
        relays = [relay.statistics() for relay in self.relays.values()]
        return {
            "ding_steps_pending": (
                "DING steps waiting for their due time (both stores).",
                timers.pending,
            ),
            "ding_steps_fired": ("DING step timers fired since start.", timers.fired),
            "ding_steps_in_flight": (
                "SMS and call steps being handed to the provider now.",
                sum(r.in_flight for r in relays),
            ),
            "ding_steps_sent": (
                "SMS and call steps a provider accepted.",
                sum(r.sent for r in relays),
            ),
            "ding_steps_failed": (
                "SMS and call steps that failed for good.",
                sum(r.failed for r in relays),
            ),
            "ding_steps_retried": (
                "Provider attempts retried after a transient failure.",
                sum(r.retried for r in relays),
            ),
            "ding_units_refunded": ("Quota units refunded (G2).", self.refunded),
        }

    # --- timers ----------------------------------------------------------------------------

    def schedule(self, ding: Ding) -> None:
        """Wait for every scheduled step of ``ding`` (after the write that made them)."""
        for row in ding.recipients:
            for step in row.steps:
                if step.state == "scheduled":
                    self.scheduler.schedule(step.due_at, (ding.domain, step.step_id))

    async def fire(self, keys: list[StepKey]) -> None:
        """Hand over the steps that fell due (the scheduler's callback), store by store."""
        for domain, store in self.stores.items():
            step_ids = [step for kind, step in keys if kind == domain]
            if step_ids:
                await self._fire_in(domain, store, step_ids)

    async def charge(
        self, domain: DingDomain, store: DingStore, steps: Sequence[DingStep]
    ) -> dict[int, StepCharge]:
        """G2, first half of a hand-over: charge each due SMS or call step among ``steps`` in
        the database that keeps its payer's account, once per (store, step): a repeat
        (after a crash before the hand-over committed) answers the recorded outcome. An
        organisation that is gone (O4) pays nothing: ``exhausted``, nothing written."""
        now = self.clock.now_ms()
        paid = [s for s in steps if s.state == "scheduled" and s.channel != "in_app"]
        payers = await store.payers(sorted({s.ding_id for s in paid}))
        charged: dict[int, StepCharge] = {}
        for step in paid:
            assert step.channel != "in_app"
            payer = payers[step.ding_id]
            cost = self.ledger.charge(payer=payer, channel=step.channel, now_ms=now)
            org = payer_org(payer)
            if org is not None and self._org_alive is not None and not await self._org_alive(org):
                charged[step.step_id] = StepCharge(charge=cost, outcome="exhausted")
                continue
            outcome = await self.payer_store(payer).charge_step(
                charge_key(domain, step.step_id), cost, now=now
            )
            charged[step.step_id] = StepCharge(charge=cost, outcome=outcome)
        return charged

    async def _fire_in(self, domain: DingDomain, store: DingStore, step_ids: list[int]) -> None:
        steps = await store.steps(step_ids)
        charged = await self.charge(domain, store, steps)
        # Second half: the step's state from the known outcome, with its outbox row, in one
        # transaction of the DING's own database (a step of a deleted DING is a no-op).
        result = await store.hand_over(step_ids, now=self.clock.now_ms(), charged=charged)
        if any(step.state == "handed_over" for step, _ in result.changed):
            self.relays[domain].wake()
        if any(c.outcome == "paid" for c in charged.values()):
            self.refunds_due()
        released = set(result.released)
        for ding_id in released:
            change = next(c for _, c in result.changed if c.ding.ding_id == ding_id)
            await self.publish_round(change.ding, [r.user_id for r in change.ding.recipients])
        for step, change in result.changed:
            if step.ding_id not in released:
                self.publish_change(change)

    # --- refunds (G2) ----------------------------------------------------------------------

    def refunds_due(self) -> None:
        """A write may have owed a refund: carry it out now."""
        self._refunds_due.set()

    async def settle_refunds(self) -> int:
        """Carry out every refund owed in both stores: give the unit back in the payer's
        database (idempotent by the charge key), then forget the debt. A crash in between
        repeats the refund, which then changes nothing. Returns the units given back."""
        given = 0
        for domain, store in self.stores.items():
            while owed := await store.refunds_owed(limit=REFUND_PAGE):
                now = self.clock.now_ms()
                for step_id, payer in owed:
                    org = payer_org(payer)
                    if not payer or (
                        org is not None
                        and self._org_alive is not None
                        and not await self._org_alive(org)
                    ):
                        continue  # the DING or the package is gone (O4): nothing to give back
                    key = charge_key(domain, step_id)
                    given += await self.payer_store(payer).refund_charge(key, now=now)
                await store.refunds_settled([step_id for step_id, _ in owed])
                if len(owed) < REFUND_PAGE:
                    break
        self.refunded += given
        return given

    async def _run_refunds(self) -> None:
        outage = Outage("DING refunds")
        while True:
            self._refunds_due = trio.Event()
            try:
                await self.settle_refunds()
            except REFUSED as error:
                outage.refused(error)  # logged once; the next round (a minute at most) retries
            except Exception:
                log.exception("DING refunds failed; retrying")
            else:
                outage.over()
            with trio.move_on_after(REFUND_EVERY_SECONDS):
                await self._refunds_due.wait()

    # --- telling people ----------------------------------------------------------------------

    async def publish_round(self, ding: Ding, users: Sequence[int]) -> None:
        """A round went out to ``users``: the priority event to each, then the sender sees
        their statuses; those with a device online now count as delivered."""
        self._publish(users, ding_event(ding))
        for user in users:
            self.publish_change(StepChange(ding=ding, user_id=user))
        online = [u for u in users if self._is_online(u)]
        if online:
            for change in await self.store_of(ding).mark_delivered(
                ding.ding_id, online, now=self.clock.now_ms()
            ):
                self.publish_change(change)

    def publish_change(self, change: StepChange) -> None:
        """One recipient's status: to the sender's devices and the recipient's own."""
        ding = change.ding
        self._publish({ding.sender, change.user_id}, status_event(ding, change.recipient))

    def publish_state(self, ding: Ding) -> None:
        """The DING's own state changed (a cancel): to the sender's devices."""
        self._publish([ding.sender], status_event(ding, None))
