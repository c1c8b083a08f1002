"""The DING machinery of one server process: durable escalation timers, the hand-over of
due steps, the outbox relay, and the events that tell senders and recipients (G1-G3).

``run`` owns two tasks for the server's lifetime: the ``Scheduler`` (one heap of every
scheduled step, loaded from the store at start) and the ``OutboxRelay``. When steps fall
due, ``fire`` hands them over in one store transaction (``DingStore.hand_over``: state change,
quota charge and outbox row together), wakes the relay, and publishes what changed. A crash
anywhere loses nothing: the store has the steps and the outbox, and the next start loads
both (``docs/ding.md`` states the guarantees).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec
import trio

from server.bus import Bus, Deliver
from server.clock import Clock
from server.config import Config
from server.ding.limits import RecipientLimits
from server.ding.plan import Plan
from server.ding.quota import Ledgers, OrgPackages, PersonalAllowance, QuotaLedger
from server.ding.relay import OutboxRelay, RelayOptions
from server.ding.render import ding_event, status_event
from server.notify.interface import Notifier
from server.scheduler import Scheduler
from storage.ding import DingStore
from storage.ding_records import ChannelName, Ding, QuotaCharge, StepChange
from storage.interfaces import PersonalStore
from storage.stores import Stores

log = logging.getLogger(__name__)

#: Scheduled steps read from the store per page when loading the heap.
LOAD_PAGE = 10_000

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
        notifier: Notifier,
        clock: Clock,
        publish: Publish,
        is_online: Callable[[int], bool],
        ledger: QuotaLedger,
        limits: RecipientLimits,
        settings: DingSettings,
        max_sleep: float = 1.0,
        relay_options: RelayOptions | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ledger = ledger
        self.limits = limits
        self.settings = settings
        self._publish = publish
        self._is_online = is_online
        self.scheduler: Scheduler[int] = Scheduler(clock, self.fire, max_sleep=max_sleep)
        self.relay = OutboxRelay(
            store=store,
            personal=personal,
            notifier=notifier,
            clock=clock,
            on_change=self.publish_change,
            options=relay_options,
        )

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

        sms, call = config.ding_sms_after_seconds, config.ding_call_after_seconds
        return cls(
            store=stores.ding,
            personal=stores.personal,
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
            await nursery.start(self.relay.run)
            task_status.started()

    async def _load_pending(self) -> AsyncIterator[tuple[int, int]]:
        after: tuple[int, int] | None = None
        while True:
            page = await self.store.pending_steps(after=after, limit=LOAD_PAGE)
            for due_at, step_id in page:
                yield due_at, step_id
            if len(page) < LOAD_PAGE:
                return
            after = page[-1]

    # --- timers ----------------------------------------------------------------------------

    def schedule(self, ding: Ding) -> None:
        """Wait for every scheduled step of ``ding`` (after the write that made them)."""
        for row in ding.recipients:
            for step in row.steps:
                if step.state == "scheduled":
                    self.scheduler.schedule(step.due_at, step.step_id)

    async def fire(self, step_ids: list[int]) -> None:
        """Hand over the steps that fell due (the scheduler's callback)."""
        now = self.clock.now_ms()
        steps = await self.store.steps(step_ids)
        paid = [s for s in steps if s.state == "scheduled" and s.channel != "in_app"]
        payers = await self.store.payers(sorted({s.ding_id for s in paid}))
        charges: dict[tuple[str, ChannelName], QuotaCharge] = {}
        for step in paid:
            payer = payers[step.ding_id]
            if (payer, step.channel) not in charges:
                charges[(payer, step.channel)] = self.ledger.charge(
                    payer=payer, channel=step.channel, now_ms=now
                )
        result = await self.store.hand_over(step_ids, now=now, charges=charges)
        if any(step.state == "handed_over" for step, _ in result.changed):
            self.relay.wake()
        released = set(result.released)
        for ding_id in released:
            change = next(c for _, c in result.changed if c.ding.ding_id == ding_id)
            await self.publish_round(change.ding, [r.user_id for r in change.ding.recipients])
        for step, change in result.changed:
            if step.ding_id not in released:
                self.publish_change(change)

    # --- telling people ----------------------------------------------------------------------

    async def publish_round(self, ding: Ding, users: Sequence[int]) -> None:
        """A round went out to ``users``: the priority event to each, then the sender sees
        their statuses; those with a device online now count as delivered."""
        self._publish(users, ding_event(ding))
        for user in users:
            self.publish_change(StepChange(ding=ding, user_id=user))
        online = [u for u in users if self._is_online(u)]
        if online:
            for change in await self.store.mark_delivered(
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
