"""DING messages end to end over a real WebSocket (G1-G3): confirm stops escalation, an
exhausted quota is a status, a SIGKILL mid-escalation loses no step and repeats none under
another key, and the webhook provider gets signed, retried, idempotent requests.

In-process servers run on memory and SQLite with a ``ManualClock`` the test moves (then it
pokes the scheduler); the restart tests run ``rivet serve`` as a subprocess on SQLite, in
real time with delays of a second or two.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from client import RivetClient
from protocol import ding as pd
from protocol.ids import direct_conversation_id
from server.app import RunningServer, serve
from server.clock import ManualClock
from server.notify.memory import MemoryNotifier
from server.notify.outbox import outbox_path, read_outbox
from server.notify.records import SmsRecord
from tests.e2e.conftest import Harness, make_config
from tests.e2e.processes import create_users, rivet_server
from tests.webhook_gateway import Gateway


class ClockHarness(Harness):
    clock: ManualClock

    async def phone_of(self, user_id: int | None) -> str:
        assert user_id is not None
        user = await self.server.ctx.stores.personal.get_user(user_id)
        assert user is not None
        return user.phone

    def advance(self, seconds: float) -> None:
        """Move the wall clock and have the DING scheduler look at it now."""
        self.clock.advance(seconds)
        self.server.ctx.ding.scheduler.poke()


@pytest.fixture(params=["memory", "sqlite"])
async def ding_harness(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
) -> AsyncIterator[ClockHarness]:
    clock = ManualClock()
    notifier = MemoryNotifier(clock=clock)
    config = make_config(tmp_path, store=request.param, ding_personal_sms_per_month=1)
    running: RunningServer = await nursery.start(
        partial(serve, config, clock=clock, notifier=notifier)
    )
    harness = ClockHarness(running, notifier)
    harness.clock = clock
    yield harness
    running.shutdown()


async def wait_status(
    client: RivetClient, done: Callable[[pd.DingStatusEvent], bool]
) -> pd.DingStatusEvent:
    with trio.fail_after(10):
        while True:
            event = await client.next_event()
            if isinstance(event, pd.DingStatusEvent) and done(event):
                return event


async def wait_all(client: RivetClient, *checks: Callable[[pd.DingStatusEvent], bool]) -> None:
    """Until every check has matched one status event, in any order."""
    waiting = list(checks)
    with trio.fail_after(10):
        while waiting:
            event = await client.next_event()
            if isinstance(event, pd.DingStatusEvent):
                waiting = [check for check in waiting if not check(event)]


async def until(condition: Callable[[], bool], *, seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await trio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


async def wait_ding(client: RivetClient) -> pd.DingEvent:
    with trio.fail_after(10):
        while True:
            event = await client.next_event()
            if isinstance(event, pd.DingEvent):
                return event


def step_state(status: pd.DingRecipient, channel: str) -> str | None:
    states = [s.state for s in status.steps if s.channel == channel]
    return states[-1] if states else None


def channel_is(user: int, channel: str, state: str) -> Callable[[pd.DingStatusEvent], bool]:
    def check(event: pd.DingStatusEvent) -> bool:
        row = event.recipient
        return row is not None and row.user_id == user and step_state(row, channel) == state

    return check


async def test_g1_e2e_confirm_stops_escalation(ding_harness: ClockHarness) -> None:
    h = ding_harness
    alice, bob, carol = [await h.new_user(n) for n in ("Alice", "Bob", "Carol")]
    assert alice.user_id and bob.user_id and carol.user_id
    async with (
        RivetClient.connect(h.url, alice) as a,
        RivetClient.connect(h.url, bob) as b,
        RivetClient.connect(h.url, carol) as c,
    ):
        await a.send(direct_conversation_id(alice.user_id, bob.user_id), "hi bob")
        await a.send(direct_conversation_id(alice.user_id, carol.user_id), "hi carol")
        sent: pd.DingSent = await a.request(
            pd.DingSend(
                rid=0,
                cmid="fire",
                recipients=[bob.user_id, carol.user_id],
                text="the build is on fire",
                plan=pd.DingPlan(sms_after_s=60, call_after_s=120),
            )
        )
        ding_id = sent.ding.ding_id
        assert (await wait_ding(b)).ding_id == ding_id
        assert (await wait_ding(c)).ding_id == ding_id
        confirmed: pd.Ding = await b.request(pd.DingConfirm(rid=0, ding_id=ding_id))
        (row,) = confirmed.ding.recipients
        assert row.confirmed_at is not None
        await wait_status(
            a, lambda e: e.recipient is not None and e.recipient.confirmed_at is not None
        )
        # Well past both delays: carol (unconfirmed) escalates; bob (confirmed) never does.
        h.advance(61)
        await wait_status(a, channel_is(carol.user_id, "sms", "sent"))
        h.advance(60)
        await wait_status(a, channel_is(carol.user_id, "call", "sent"))
        h.advance(600)
        await trio.sleep(0.2)
        carol_phone = await h.phone_of(carol.user_id)
        assert [s.phone for s in h.notifier.sms] == [carol_phone]
        assert [c.phone for c in h.notifier.calls] == [carol_phone]
        final: pd.Ding = await a.request(pd.DingGet(rid=0, ding_id=ding_id))
        rows = {r.user_id: r for r in final.ding.recipients}
        assert step_state(rows[bob.user_id], "sms") == "cancelled"
        assert step_state(rows[bob.user_id], "call") == "cancelled"


async def test_g2_e2e_exhausted_quota_is_a_status_and_in_app_still_goes_out(
    ding_harness: ClockHarness,
) -> None:
    h = ding_harness  # one free SMS a month
    alice, bob, carol = [await h.new_user(n) for n in ("Alice", "Bob", "Carol")]
    assert alice.user_id and bob.user_id and carol.user_id
    async with (
        RivetClient.connect(h.url, alice) as a,
        RivetClient.connect(h.url, bob) as b,
        RivetClient.connect(h.url, carol) as c,
    ):
        await a.send(direct_conversation_id(alice.user_id, bob.user_id), "hi bob")
        await a.send(direct_conversation_id(alice.user_id, carol.user_id), "hi carol")
        sent: pd.DingSent = await a.request(
            pd.DingSend(
                rid=0,
                cmid="now",
                recipients=[bob.user_id, carol.user_id],
                text="call me",
                plan=pd.DingPlan(sms_after_s=0),
            )
        )
        await wait_ding(b)
        await wait_ding(c)
        await wait_all(
            a,
            channel_is(bob.user_id, "sms", "sent"),
            channel_is(carol.user_id, "sms", "quota_exhausted"),
        )
        assert [s.phone for s in h.notifier.sms] == [await h.phone_of(bob.user_id)]
        seen: pd.Ding = await c.request(pd.DingGet(rid=0, ding_id=sent.ding.ding_id))
        (row,) = seen.ding.recipients
        assert row.delivered_at is not None
        assert step_state(row, "in_app") == "sent"
        assert step_state(row, "sms") == "quota_exhausted"


async def _shared_chat(url: str, alice: Any, bob: Any) -> None:
    async with RivetClient.connect(url, alice) as a:
        await a.send(direct_conversation_id(alice.user_id, bob.user_id), "hi")


def _sms_to(data: Path, phone: str) -> list[SmsRecord]:
    return [
        r
        for r in read_outbox(outbox_path(data), kind="sms", phone=phone)
        if isinstance(r, SmsRecord)
    ]


async def test_g1_e2e_sigkill_mid_escalation_hands_the_due_step_over_after_restart(
    tmp_path: Path,
) -> None:
    """The SMS step is persisted with its wall-clock due time; the server is killed before
    it is due; after the restart the step is handed over once, with its key."""
    data = tmp_path / "data"
    alice, bob = create_users(data, 2, prefix="+1777")
    bob_phone = "+17770000001"
    async with rivet_server(data) as (process, url):
        await _shared_chat(url, alice, bob)
        async with RivetClient.connect(url, alice) as a:
            sent: pd.DingSent = await a.request(
                pd.DingSend(
                    rid=0,
                    cmid="kill",
                    recipients=[bob.user_id],
                    text="wake up",
                    plan=pd.DingPlan(sms_after_s=2),
                )
            )
        process.kill()  # SIGKILL, with the SMS step pending
    assert process.returncode is not None
    assert _sms_to(data, bob_phone) == []
    await trio.sleep(2.5)  # it falls due while no server runs
    async with rivet_server(data) as (_, url):
        await until(lambda: bool(_sms_to(data, bob_phone)))
        await trio.sleep(1.0)  # nothing else may follow
        (sms,) = _sms_to(data, bob_phone)
        assert "wake up" in sms.text and sms.idempotency_key
        async with RivetClient.connect(url, alice) as a:
            shown: pd.Ding = await a.request(pd.DingGet(rid=0, ding_id=sent.ding.ding_id))
        (row,) = shown.ding.recipients
        assert step_state(row, "sms") == "sent"


async def test_g1_e2e_webhook_provider_gets_signed_retried_requests(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    gateway = Gateway()
    await nursery.start(gateway.serve)
    data = tmp_path / "data"
    alice, bob = create_users(data, 2, prefix="+1666")
    flags = ("--notifier", "webhook", "--webhook-url", gateway.url, "--webhook-secret", "k3y")
    async with rivet_server(data, *flags) as (_, url):
        await _shared_chat(url, alice, bob)
        with trio.fail_after(10):
            (push,) = await gateway.wait_for(1)  # bob is offline: the chat message's push
        assert push.json["kind"] == "push"
        gateway.fail = 2  # the next two answers are 503
        async with RivetClient.connect(url, alice) as a:
            sent: pd.DingSent = await a.request(
                pd.DingSend(
                    rid=0,
                    cmid="hook",
                    recipients=[bob.user_id],
                    text="pager",
                    plan=pd.DingPlan(sms_after_s=0),
                )
            )
            status = await wait_status(a, channel_is(bob.user_id, "sms", "sent"))
            assert status.ding_id == sent.ding.ding_id
    requests = gateway.received[1:]
    assert len(requests) == 3
    assert {r.headers["idempotency-key"] for r in requests} == {requests[0].json["idempotency_key"]}
    for received in requests:
        digest = hmac.new(b"k3y", received.body, hashlib.sha256).hexdigest()
        assert received.headers["x-rivet-signature"] == f"sha256={digest}"
        assert received.json["kind"] == "sms" and received.json["phone"] == "+16660000001"
        assert "pager" in received.json["text"]


async def test_g1_e2e_a_step_in_flight_at_sigkill_is_repeated_with_the_same_key(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Killed while the provider holds the request (accepted or not, Rivet cannot know):
    after the restart the step is handed over again, under the same idempotency key."""
    gateway = Gateway()
    await nursery.start(gateway.serve)
    data = tmp_path / "data"
    alice, bob = create_users(data, 2, prefix="+1555")
    flags = ("--notifier", "webhook", "--webhook-url", gateway.url, "--webhook-secret", "k")
    async with rivet_server(data, *flags) as (process, url):
        await _shared_chat(url, alice, bob)
        with trio.fail_after(10):
            await gateway.wait_for(1)  # the chat message's push to bob
        gateway.hang = 1  # the provider takes the SMS and never answers
        async with RivetClient.connect(url, alice) as a:
            sent: pd.DingSent = await a.request(
                pd.DingSend(
                    rid=0,
                    cmid="inflight",
                    recipients=[bob.user_id],
                    text="again?",
                    plan=pd.DingPlan(sms_after_s=0),
                )
            )
        with trio.fail_after(10):
            await gateway.wait_for(2)
        process.kill()
    async with rivet_server(data, *flags) as (_, url):
        with trio.fail_after(15):
            _, first, second = await gateway.wait_for(3)
        assert first.json["kind"] == second.json["kind"] == "sms"
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        assert {**first.json, "time": 0} == {**second.json, "time": 0}  # the same SMS
        async with RivetClient.connect(url, alice) as a:
            with trio.fail_after(10):
                while True:
                    shown: pd.Ding = await a.request(pd.DingGet(rid=0, ding_id=sent.ding.ding_id))
                    if step_state(shown.ding.recipients[0], "sms") == "sent":
                        break
                    await trio.sleep(0.05)
    assert len(gateway.received) == 3
