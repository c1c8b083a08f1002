"""The outbox relay: hands DING SMS and call steps from the store's outbox to the Notifier.

``DingStore.hand_over`` writes an outbox row in the same transaction that moves a step to
``handed_over``. This relay claims due rows, calls ``Notifier.send_sms`` or ``place_call``
with the row's idempotency key (fixed per step), and records the outcome: ``sent`` (the row
leaves the outbox), a retry later with exponential backoff (the row stays, unclaimed, with
its next attempt time persisted), or ``failed`` after ``max_attempts`` or a permanent
refusal. At start every claim is released: rows a killed process had claimed are sent again.
While the store refuses writes (``server.background.REFUSED``: its writer died), claiming
and recording back off (``Outage``) instead of ending the server; a sent step whose outcome
cannot be recorded keeps its claim, and is sent again (same key) after the restart.

So the guarantee is **at least once per step, with the same key every time**: a crash after
the provider accepted a step and before ``outbox_sent`` committed repeats it after the
restart, and the provider drops the repeat by its key. At most ``concurrency`` steps are in
flight at once; the rest wait in the outbox (backpressure, house habit 6).

Where a step goes is one rule, ``dialable_phone`` (G1 with P5): a personal user's phone, an
enterprise account's contact phone (set by its organisation's admins; its user row's
``phone`` is only the placeholder ``ent:<org>:<account>``). A step with no number to dial
never reaches the Notifier: it fails at once (``Unreachable``) and its unit is refunded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from server.background import Outage
from server.clock import Clock
from server.notify.interface import Notifier, NotifyError
from storage.ding import DingStore
from storage.ding_records import OutboxItem, StepChange
from storage.enterprise import EnterpriseAccount
from storage.interfaces import PersonalStore
from storage.records import User

log = logging.getLogger(__name__)

#: Characters of a DING's text that go into an SMS or a call.
MAX_NOTIFY_TEXT = 480


#: The enterprise account whose personal user row is this user id, if any (P5).
AccountOf = Callable[[int], Awaitable[EnterpriseAccount | None]]


class Unreachable(NotifyError):
    """The step cannot go to any provider (the recipient has no phone number): it fails
    at once, and since no provider saw it, its unit is refunded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def dialable_phone(user: User, account: EnterpriseAccount | None) -> str | None:
    """G1 with P5: the number a DING's SMS or call to ``user`` goes to, or None if there is
    none. An enterprise account's is the contact phone its organisation's admins set (E.164,
    validated when set), never its user row's placeholder ``ent:<org>:<account>``; a
    personal user's is the phone they registered with. A user row whose ``phone`` is not a
    number (an erased account's ``deleted:<id>``) has none, and neither has an enterprise
    account its organisation disabled, banned or cancelled (P5: it is out of reach)."""
    if account is not None:
        return account.phone if account.active else None
    return user.phone if user.phone.startswith("+") else None


@dataclass(frozen=True, slots=True)
class RelayOptions:
    #: Steps handed to the Notifier at once.
    concurrency: int = 8
    #: Attempts (each possibly retried inside the Notifier) before a step fails for good.
    max_attempts: int = 8
    #: Backoff between attempts: ``base * 2**attempt`` seconds, at most ``cap``.
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 300.0
    #: Longest wait before the outbox is looked at again without being woken.
    max_sleep_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    in_flight: int
    sent: int
    retried: int
    failed: int


def notify_text(*, channel: str, sender_name: str, text: str) -> str:
    """What the recipient reads or hears; never includes anything but the DING itself."""
    body = text if len(text) <= MAX_NOTIFY_TEXT else text[: MAX_NOTIFY_TEXT - 1] + "…"
    if channel == "call":
        return f"This is an urgent DING from {sender_name}. {body}"
    return f"DING from {sender_name}: {body}"


def _withdrawn(change: StepChange, step_id: int) -> bool:
    """G1/G2: a failed attempt of a recipient who confirmed meanwhile withdrew the step
    (``outbox_retry``): its unit is owed back."""
    return any(s.step_id == step_id and s.state == "cancelled" for s in change.recipient.steps)


class OutboxRelay:
    def __init__(
        self,
        *,
        store: DingStore,
        personal: PersonalStore,
        account_of: AccountOf,
        notifier: Notifier,
        clock: Clock,
        on_change: Callable[[StepChange], None],
        on_refund: Callable[[], None] = lambda: None,
        options: RelayOptions | None = None,
        name: str = "DING relay",
    ) -> None:
        self._store = store
        self._personal = personal
        self._account_of = account_of
        self._notifier = notifier
        self._clock = clock
        self._on_change = on_change
        #: A failed step was owed its unit back (``Unreachable``): carry the refund out.
        self._on_refund = on_refund
        self._options = options or RelayOptions()
        #: Claims and recorded outcomes the store refused (one outage for both).
        self._outage = Outage(name)
        self._wake = trio.Event()
        self._in_flight = 0
        self._sent = 0
        self._retried = 0
        self._failed = 0

    def wake(self) -> None:
        """New rows are in the outbox: look now."""
        self._wake.set()

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            in_flight=self._in_flight, sent=self._sent, retried=self._retried, failed=self._failed
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        released = await self._store.release_claims()
        if released:
            log.warning(
                "re-sending DING steps a previous process had claimed", extra={"n": released}
            )
        task_status.started()
        async with trio.open_nursery() as workers:
            while True:
                self._wake = trio.Event()
                delay = self._options.max_sleep_seconds
                room = self._options.concurrency - self._in_flight
                if room > 0:
                    items = await self._outage.retry(partial(self._claim, room))
                    for item in items:
                        self._in_flight += 1
                        workers.start_soon(self._deliver, item)
                    if items:
                        continue
                    upcoming = await self._store.next_outbox_attempt()
                    if upcoming is not None:
                        wait = max(0.0, (upcoming - self._clock.now_ms()) / 1000)
                        delay = min(delay, wait)
                with trio.move_on_after(delay):
                    await self._wake.wait()

    async def _claim(self, limit: int) -> list[OutboxItem]:
        return await self._store.claim_outbox(now=self._clock.now_ms(), limit=limit)

    async def _deliver(self, item: OutboxItem) -> None:
        try:
            error = await self._call(item)

            async def record() -> StepChange | None:
                # Record the outcome even while shutting down: a sent step must not be
                # re-sent. Only the wait between refused attempts is cancellable.
                with trio.CancelScope(shield=True):
                    change = await self._record(item, error)
                return change

            change = await self._outage.retry(record)
            if change is not None:
                self._on_change(change)
                if isinstance(error, Unreachable) or _withdrawn(change, item.step_id):
                    self._on_refund()
        finally:
            self._in_flight -= 1
            self._wake.set()

    async def _call(self, item: OutboxItem) -> NotifyError | None:
        """Hand the step to the Notifier; None when it was accepted."""
        recipient = await self._personal.get_user(item.user_id)
        if recipient is None:
            return NotifyError("the recipient's account is gone", retryable=False)
        phone = dialable_phone(recipient, await self._account_of(item.user_id))
        if phone is None:
            # G2: no provider sees the step, so its unit is refunded (``_record``).
            return Unreachable("the recipient has no phone number to send to")
        if not item.text:
            # A3/A1: the sender's key was destroyed; never send an erased DING's words (or a
            # contentless alert): the step fails, visibly, like any refusal.
            return NotifyError("the DING's content was erased", retryable=False)
        sender = await self._personal.get_user(item.sender)
        name = sender.display_name if sender is not None and sender.display_name else "Rivet"
        text = notify_text(channel=item.channel, sender_name=name, text=item.text)
        try:
            if item.channel == "sms":
                await self._notifier.send_sms(
                    phone=phone, text=text, idempotency_key=item.idempotency_key
                )
            else:
                await self._notifier.place_call(
                    phone=phone, text=text, idempotency_key=item.idempotency_key
                )
        except NotifyError as error:
            return error
        except Exception as error:  # a broken backend: retry it like a transient failure
            log.exception("the notifier failed", extra={"step_id": item.step_id})
            return NotifyError(str(error) or type(error).__name__)
        return None

    async def _record(self, item: OutboxItem, error: NotifyError | None) -> StepChange | None:
        now = self._clock.now_ms()
        # Each counter moves once the outcome is stored (``_deliver`` may call this again).
        if error is None:
            sent = await self._store.outbox_sent(item.step_id, now=now)
            self._sent += 1
            return sent
        attempt = item.attempts + 1
        if not error.retryable or attempt >= self._options.max_attempts:
            failed = await self._store.outbox_failed(
                item.step_id, now=now, refund=isinstance(error, Unreachable)
            )
            self._failed += 1
            log.warning(
                "a DING step failed",
                extra={"step_id": item.step_id, "attempts": attempt, "reason": str(error)},
            )
            return failed
        backoff = min(
            self._options.backoff_cap_seconds,
            self._options.backoff_base_seconds * 2 ** (attempt - 1),
        )
        retried = await self._store.outbox_retry(
            item.step_id, next_attempt_at=now + int(backoff * 1000), now=now
        )
        self._retried += 1
        return retried
