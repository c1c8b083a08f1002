"""DING messages without a network (G1-G3, C2): the router, the services, the escalation
runtime and its relay on the memory stores, with time driven by trio's ``autojump_clock``
(the wall clock moves with it, see ``wall_clock.py``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from protocol import codec
from protocol import ding as pd
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from server.config import Config
from server.connection import Connection
from server.context import Context
from server.ding.quota import PersonalAllowance
from server.ding.relay import notify_text
from server.notify.interface import NotifyError
from server.notify.memory import MemoryNotifier
from server.router import Router
from storage.memory import open_memory_stores
from tests.server.routers import build_router, connect, frames
from tests.server.wall_clock import TrioWallClock

_phones = itertools.count(1)
_rids = itertools.count(100)


class FlakyNotifier(MemoryNotifier):
    """Refuses the first ``failures`` SMS and calls (transiently, or for good)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = 0
        self.permanent = False
        self.attempts: list[str] = []

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        self.attempts.append(idempotency_key)
        if self.failures:
            self.failures -= 1
            raise NotifyError("gateway down", retryable=not self.permanent)
        await super().send_sms(phone=phone, text=text, idempotency_key=idempotency_key)


@dataclass
class User:
    user_id: int
    conn: Connection
    phone: str
    #: Events received and not yet looked at.
    inbox: list[dict[str, Any]] = field(default_factory=list)

    def drain(self) -> list[dict[str, Any]]:
        """Everything queued for the connection; events also go to ``inbox``."""
        out = frames(self.conn)
        self.inbox.extend(f for f in out if f["op"] not in ("ok", "error"))
        return out


@dataclass
class World:
    router: Router
    ctx: Context
    notifier: FlakyNotifier

    async def call(self, user: User, request: rq.Request) -> dict[str, Any]:
        request = msgspec.structs.replace(request, rid=next(_rids))
        await self.router.handle_frame(user.conn, codec.encode_request(request))
        replies = [f for f in user.drain() if f["op"] in ("ok", "error")]
        assert len(replies) == 1, replies
        return replies[0]

    async def ok(self, user: User, request: rq.Request) -> dict[str, Any]:
        reply = await self.call(user, request)
        assert reply["op"] == "ok", reply
        result: dict[str, Any] = reply["result"]
        return result

    def events(self, user: User, op: str) -> list[dict[str, Any]]:
        """The events of kind ``op`` the user received since last asked."""
        user.drain()
        found = [f for f in user.inbox if f["op"] == op]
        user.inbox = [f for f in user.inbox if f["op"] != op]
        return found

    async def new_user(self, name: str) -> User:
        conn = connect(4096)
        phone = f"+1666{next(_phones):07d}"
        user = User(user_id=0, conn=conn, phone=phone)
        await self.ok(user, rq.Hello(rid=0, version=1))
        await self.ok(user, rq.LoginRequestCode(rid=0, phone=phone))
        code = self.notifier.last_code(phone)
        assert code is not None
        tokens = await self.ok(
            user, rq.LoginVerify(rid=0, phone=phone, code=code, display_name=name)
        )
        user.user_id = tokens["session"]["user_id"]
        self.ctx.hub.attach(conn)
        return user

    async def chat(self, a: User, b: User) -> None:
        """A single chat between ``a`` and ``b``: they share a conversation."""
        conv = direct_conversation_id(a.user_id, b.user_id)
        await self.ok(
            a, rq.MsgSend(rid=0, conv=conv, cmid=f"hi{b.user_id}", content=rq.Content(text="hi"))
        )

    async def ding(self, sender: User, *recipients: User, **fields: Any) -> dict[str, Any]:
        fields.setdefault("cmid", f"d{next(_rids)}")
        fields.setdefault("text", "the build is on fire")
        request = pd.DingSend(rid=0, recipients=[r.user_id for r in recipients], **fields)
        sent = await self.ok(sender, request)
        return sent["ding"]  # type: ignore[no-any-return]

    async def get(self, user: User, ding_id: str) -> dict[str, Any]:
        return (await self.ok(user, pd.DingGet(rid=0, ding_id=ding_id)))["ding"]  # type: ignore[no-any-return]


def steps_of(ding: dict[str, Any], user: User) -> dict[str, str]:
    """channel -> state of the recipient's newest round."""
    (row,) = [r for r in ding["recipients"] if r["user_id"] == user.user_id]
    newest = max(s["round"] for s in row["steps"])
    return {s["channel"]: s["state"] for s in row["steps"] if s["round"] == newest}


@asynccontextmanager
async def world(tmp_path: Path, **overrides: Any) -> AsyncIterator[World]:
    config = Config(store="memory", data_dir=tmp_path).with_overrides(**overrides)
    clock = TrioWallClock()
    notifier = FlakyNotifier(clock=clock)
    async with open_memory_stores() as stores, trio.open_nursery() as nursery:
        router = build_router(config, stores, clock=clock, notifier=notifier)
        await nursery.start(router.ctx.ding.run)
        yield World(router=router, ctx=router.ctx, notifier=notifier)
        nursery.cancel_scope.cancel()


PLAN = pd.DingPlan(sms_after_s=60, call_after_s=180)


async def test_g1_escalates_from_in_app_to_sms_to_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob = await w.new_user("Alice"), await w.new_user("Bob")
        await w.chat(alice, bob)
        ding = await w.ding(alice, bob, plan=PLAN)
        assert ding["state"] == "sent" and ding["round"] == 1
        assert steps_of(ding, bob) == {"in_app": "sent", "sms": "scheduled", "call": "scheduled"}
        (event,) = w.events(bob, "ev.ding")
        assert (event["ding_id"], event["sender"], event["round"]) == (
            ding["ding_id"],
            alice.user_id,
            1,
        )
        assert ding["recipients"][0]["delivered_at"] is not None  # bob was online
        await trio.sleep(59)
        assert w.notifier.sms == []
        await trio.sleep(2)
        (sms,) = w.notifier.sms
        assert sms.phone == bob.phone
        assert sms.text == notify_text(
            channel="sms", sender_name="Alice", text="the build is on fire"
        )
        statuses = w.events(alice, "ev.ding.status")
        assert statuses[-1]["recipient"]["user_id"] == bob.user_id
        assert {s["channel"]: s["state"] for s in statuses[-1]["recipient"]["steps"]}[
            "sms"
        ] == "sent"
        await trio.sleep(120)
        (call,) = w.notifier.calls
        assert call.phone == bob.phone and call.idempotency_key != sms.idempotency_key
        assert steps_of(await w.get(alice, ding["ding_id"]), bob)["call"] == "sent"


async def test_g1_confirm_stops_escalation_for_that_recipient_only(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        ding = await w.ding(alice, bob, carol, plan=PLAN)
        await trio.sleep(30)
        confirmed = await w.ok(bob, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        mine = confirmed["ding"]["recipients"]
        assert [r["user_id"] for r in mine] == [bob.user_id]  # a recipient sees only their row
        assert mine[0]["confirmed_at"] is not None
        assert steps_of(confirmed["ding"], bob) == {
            "in_app": "sent",
            "sms": "cancelled",
            "call": "cancelled",
        }
        (status,) = [e for e in w.events(alice, "ev.ding.status") if e["recipient"]["confirmed_at"]]
        assert status["recipient"]["user_id"] == bob.user_id
        await trio.sleep(600)
        assert [s.phone for s in w.notifier.sms] == [carol.phone]
        assert [c.phone for c in w.notifier.calls] == [carol.phone]
        again = await w.ok(bob, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        assert again["ding"]["recipients"][0]["confirmed_at"] == mine[0]["confirmed_at"]


async def test_g2_exhausted_quota_is_a_status_and_the_in_app_ding_still_goes_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ding_personal_sms_per_month=1) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        ding = await w.ding(alice, bob, carol, plan=pd.DingPlan(sms_after_s=0))
        assert len(w.events(bob, "ev.ding")) == 1 and len(w.events(carol, "ev.ding")) == 1
        await trio.sleep(1)
        assert [s.phone for s in w.notifier.sms] == [bob.phone]
        shown = await w.get(alice, ding["ding_id"])
        assert steps_of(shown, bob)["sms"] == "sent"
        assert steps_of(shown, carol) == {"in_app": "sent", "sms": "quota_exhausted"}
        exhausted = [
            e
            for e in w.events(alice, "ev.ding.status")
            if any(s["state"] == "quota_exhausted" for s in e["recipient"]["steps"])
        ]
        assert [e["recipient"]["user_id"] for e in exhausted] == [carol.user_id]
        period = PersonalAllowance(sms=1, calls=0).period(w.ctx.clock.now_ms())
        balance = await w.ctx.stores.ding.quota_balance(f"user:{alice.user_id}", "sms", period)
        assert balance is not None and (balance.granted, balance.used) == (1, 1)
        assert balance.by_member == {alice.user_id: 1}


def test_g2_allowance_months_are_counted_in_the_configured_time_zone() -> None:
    # 2026-01-31T16:30Z is already February in Shanghai (UTC+8), still January in UTC.
    instant = 1_769_877_000_000
    assert PersonalAllowance(sms=1, calls=1, timezone="UTC").period(instant) == "2026-01"
    shanghai = PersonalAllowance(sms=1, calls=1, timezone="Asia/Shanghai")
    assert shanghai.period(instant) == "2026-02"
    charge = shanghai.charge(payer="user:7", channel="call", now_ms=instant)
    assert (charge.account, charge.period, charge.grant, charge.member) == (
        "user:7",
        "2026-02",
        1,
        7,
    )
    with pytest.raises(ValueError):
        shanghai.charge(payer="org:3", channel="sms", now_ms=instant)


async def test_g1_a_scheduled_ding_goes_out_at_its_time_or_is_cancelled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob = await w.new_user("Alice"), await w.new_user("Bob")
        await w.chat(alice, bob)
        now = w.ctx.clock.now_ms()
        later = await w.ding(alice, bob, send_at=now + 600_000, plan=pd.DingPlan(sms_after_s=0))
        kept = await w.ding(alice, bob, send_at=now + 300_000, plan=pd.DingPlan(sms_after_s=0))
        assert later["state"] == kept["state"] == "scheduled"
        assert w.events(bob, "ev.ding") == []
        # Before it goes out, a recipient cannot see it.
        missing = await w.call(bob, pd.DingGet(rid=0, ding_id=later["ding_id"]))
        assert missing["code"] == ErrorCode.NOT_FOUND
        assert (await w.ok(bob, pd.DingListReceived(rid=0)))["dings"] == []
        cancelled = await w.ok(alice, pd.DingCancel(rid=0, ding_id=later["ding_id"]))
        assert cancelled["ding"]["state"] == "cancelled"
        (state,) = w.events(alice, "ev.ding.status")
        assert state == {"op": "ev.ding.status", "ding_id": later["ding_id"], "state": "cancelled"}
        await trio.sleep(301)
        (event,) = w.events(bob, "ev.ding")
        assert event["ding_id"] == kept["ding_id"] and event["ts"] == now + 300_000
        assert [s.phone for s in w.notifier.sms] == [bob.phone]
        refused = await w.call(alice, pd.DingCancel(rid=0, ding_id=kept["ding_id"]))
        assert refused["code"] == ErrorCode.INVALID_STATE
        await trio.sleep(600)
        assert w.events(bob, "ev.ding") == [] and len(w.notifier.sms) == 1
        received = (await w.ok(bob, pd.DingListReceived(rid=0)))["dings"]
        assert [d["ding_id"] for d in received] == [kept["ding_id"]]
        too_far = await w.call(
            alice,
            pd.DingSend(
                rid=0, cmid="far", recipients=[bob.user_id], text="x", send_at=now + 8 * 86_400_000
            ),
        )
        assert (too_far["code"], too_far["path"]) == (ErrorCode.INVALID_FIELD, "$.send_at")


async def test_g3_redding_reaches_the_unconfirmed_at_most_once_per_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("Alice", "Bob", "Carol")]
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        ding = await w.ding(alice, bob, carol, plan=pd.DingPlan(sms_after_s=600))
        await w.ok(carol, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        w.events(bob, "ev.ding")
        w.events(carol, "ev.ding")
        await trio.sleep(100)
        early = await w.call(alice, pd.DingRedding(rid=0, ding_id=ding["ding_id"]))
        assert early["code"] == ErrorCode.RATE_LIMITED and early["retry_after"] == 200.0
        refused = await w.call(bob, pd.DingRedding(rid=0, ding_id=ding["ding_id"]))
        assert refused["code"] == ErrorCode.FORBIDDEN
        await trio.sleep(200)
        again = (await w.ok(alice, pd.DingRedding(rid=0, ding_id=ding["ding_id"])))["ding"]
        assert again["round"] == 2
        (event,) = w.events(bob, "ev.ding")
        assert event["round"] == 2
        assert w.events(carol, "ev.ding") == []
        bob_row = next(r for r in again["recipients"] if r["user_id"] == bob.user_id)
        assert [(s["channel"], s["round"], s["state"]) for s in bob_row["steps"]] == [
            ("in_app", 1, "sent"),
            ("sms", 1, "cancelled"),
            ("in_app", 2, "sent"),
            ("sms", 2, "scheduled"),
        ]
        # The old round's SMS (due at 600 s) never goes; the new one is due 600 s after 300 s.
        await trio.sleep(500)
        assert w.notifier.sms == []
        await trio.sleep(101)
        assert [s.phone for s in w.notifier.sms] == [bob.phone]
        await w.ok(bob, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        await trio.sleep(300)
        done = await w.call(alice, pd.DingRedding(rid=0, ding_id=ding["ding_id"]))
        assert done["code"] == ErrorCode.INVALID_STATE


async def test_g1_recipients_include_people_the_sender_shares_an_organisation_with(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """G1: sharing an organisation is enough, with no conversation between them; leaving
    it ends that (and a stranger stays unknown)."""
    async with world(tmp_path) as w:
        admin, colleague, stranger = [await w.new_user(n) for n in ("A", "C", "S")]
        created = await w.ok(admin, po.OrgCreate(rid=0, name="Acme"))
        org = created["org"]["org"]
        invited = await w.ok(admin, po.OrgInvite(rid=0, org=org, user=colleague.user_id))
        request_id = invited["request"]["request_id"]
        await w.ok(colleague, po.OrgAnswer(rid=0, org=org, request_id=request_id, accept=True))
        await w.ding(admin, colleague)  # no conversation between them: the organisation
        unknown = await w.call(
            admin, pd.DingSend(rid=0, cmid="s", recipients=[stranger.user_id], text="x")
        )
        assert unknown["code"] == ErrorCode.NOT_FOUND
        await w.ok(colleague, po.OrgLeave(rid=0, org=org))
        gone = await w.call(
            admin, pd.DingSend(rid=0, cmid="l", recipients=[colleague.user_id], text="x")
        )
        assert gone["code"] == ErrorCode.NOT_FOUND


async def test_g1_recipients_are_people_the_sender_shares_a_conversation_with(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol, dave = [await w.new_user(n) for n in ("A", "B", "C", "D")]
        await w.chat(alice, bob)
        group = await w.ok(
            carol, rq.GroupCreate(rid=0, cmid="g", title="team", members=[alice.user_id])
        )
        assert group["conv"]["conv"].startswith("g:")
        await w.ding(alice, bob, carol)  # a single chat, and a group
        for recipients, code, path in [
            ([dave.user_id], ErrorCode.NOT_FOUND, "$.recipients[0]"),
            ([bob.user_id, 999_999], ErrorCode.NOT_FOUND, "$.recipients[1]"),
            ([alice.user_id], ErrorCode.INVALID_FIELD, "$.recipients[0]"),
        ]:
            reply = await w.call(
                alice, pd.DingSend(rid=0, cmid=f"x{path}{code}", recipients=recipients, text="x")
            )
            assert (reply["code"], reply.get("path")) == (code, path), reply
        await w.ok(bob, rq.ContactsBlock(rid=0, user=alice.user_id, blocked=True))
        blocked = await w.call(
            alice, pd.DingSend(rid=0, cmid="b", recipients=[bob.user_id], text="x")
        )
        assert blocked["code"] == ErrorCode.BLOCKED
        bad_plan = await w.call(
            alice,
            pd.DingSend(
                rid=0,
                cmid="p",
                recipients=[carol.user_id],
                text="x",
                plan=pd.DingPlan(sms_after_s=60, call_after_s=30),
            ),
        )
        assert (bad_plan["code"], bad_plan["path"]) == (
            ErrorCode.INVALID_FIELD,
            "$.plan.call_after_s",
        )


async def test_g3_views_are_cut_to_the_viewer_and_sends_are_idempotent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol, dave = [await w.new_user(n) for n in ("A", "B", "C", "D")]
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        w.ctx.hub.detach(carol.conn)  # carol is offline: not delivered until she looks
        first = await w.ding(alice, bob, carol, cmid="same")
        again = await w.ok(
            alice,
            pd.DingSend(
                rid=0,
                cmid="same",
                recipients=[bob.user_id, carol.user_id],
                text="the build is on fire",
            ),
        )
        assert again["duplicate"] and again["ding"]["ding_id"] == first["ding_id"]
        conflict = await w.call(
            alice, pd.DingSend(rid=0, cmid="same", recipients=[bob.user_id], text="other")
        )
        assert conflict["code"] == ErrorCode.IDEMPOTENCY_CONFLICT
        rows = {r["user_id"]: r for r in first["recipients"]}
        assert rows[bob.user_id]["delivered_at"] is not None
        assert rows[carol.user_id]["delivered_at"] is None
        seen = await w.get(carol, first["ding_id"])
        assert [r["user_id"] for r in seen["recipients"]] == [carol.user_id]
        assert seen["recipients"][0]["delivered_at"] is not None
        read = await w.ok(carol, pd.DingRead(rid=0, ding_id=first["ding_id"]))
        assert read["ding"]["recipients"][0]["read_at"] is not None
        stranger = await w.call(dave, pd.DingGet(rid=0, ding_id=first["ding_id"]))
        assert stranger["code"] == ErrorCode.NOT_FOUND
        not_mine = await w.call(alice, pd.DingConfirm(rid=0, ding_id=first["ding_id"]))
        assert not_mine["code"] == ErrorCode.FORBIDDEN
        sender_view = await w.get(alice, first["ding_id"])
        rows = {r["user_id"]: r for r in sender_view["recipients"]}
        assert rows[carol.user_id]["read_at"] is not None
        assert rows[bob.user_id]["read_at"] is None
        second = await w.ding(alice, bob)
        page = await w.ok(alice, pd.DingListSent(rid=0, limit=1))
        assert [d["ding_id"] for d in page["dings"]] == [second["ding_id"]]
        rest = await w.ok(alice, pd.DingListSent(rid=0, before=page["next_before"], limit=1))
        assert [d["ding_id"] for d in rest["dings"]] == [first["ding_id"]]
        received = await w.ok(bob, pd.DingListReceived(rid=0))
        assert [d["ding_id"] for d in received["dings"]] == [second["ding_id"], first["ding_id"]]
        assert all(len(d["recipients"]) == 1 for d in received["dings"])
        assert received["next_before"] is None


async def test_c2_a_recipient_receives_a_bounded_number_of_dings(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ding_recipient_burst=2, ding_recipient_per_minute=1.0) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("A", "B", "C")]
        await w.chat(alice, bob)
        await w.chat(carol, bob)
        await w.ding(alice, bob)
        await w.ding(carol, bob)
        refused = await w.call(
            alice, pd.DingSend(rid=0, cmid="3", recipients=[bob.user_id], text="x")
        )
        assert refused["code"] == ErrorCode.RATE_LIMITED and refused["retry_after"] > 0
        await trio.sleep(refused["retry_after"])
        await w.ding(alice, bob)


async def test_the_relay_retries_with_the_same_key_then_fails_for_good(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path) as w:
        alice, bob, carol = [await w.new_user(n) for n in ("A", "B", "C")]
        await w.chat(alice, bob)
        await w.chat(alice, carol)
        w.notifier.failures = 2
        ding = await w.ding(alice, bob, plan=pd.DingPlan(sms_after_s=0))
        await trio.sleep(60)
        (sms,) = w.notifier.sms
        assert w.notifier.attempts == [sms.idempotency_key] * 3
        assert steps_of(await w.get(alice, ding["ding_id"]), bob)["sms"] == "sent"
        w.notifier.failures, w.notifier.permanent = 1, True
        other = await w.ding(alice, carol, plan=pd.DingPlan(sms_after_s=0))
        await trio.sleep(60)
        assert steps_of(await w.get(alice, other["ding_id"]), carol)["sms"] == "failed"
        assert len(w.notifier.sms) == 1


async def test_g1_confirm_withdraws_a_step_waiting_to_be_retried(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with world(tmp_path, ding_personal_sms_per_month=5) as w:
        alice, bob = await w.new_user("A"), await w.new_user("B")
        await w.chat(alice, bob)
        w.notifier.failures = 1
        ding = await w.ding(alice, bob, plan=pd.DingPlan(sms_after_s=0))
        await trio.sleep(0.5)  # the first attempt failed; the next waits for its backoff
        assert len(w.notifier.attempts) == 1
        confirmed = await w.ok(bob, pd.DingConfirm(rid=0, ding_id=ding["ding_id"]))
        assert steps_of(confirmed["ding"], bob)["sms"] == "cancelled"
        await trio.sleep(600)
        assert len(w.notifier.attempts) == 1 and w.notifier.sms == []
        period = PersonalAllowance(sms=5, calls=0).period(w.ctx.clock.now_ms())
        balance = await w.ctx.stores.ding.quota_balance(f"user:{alice.user_id}", "sms", period)
        assert balance is not None and balance.used == 0  # the withdrawn unit came back
