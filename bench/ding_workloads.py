"""The DING workload (G1-G3 at scale), speaking Rivet's protocol (see ``bench.loadgen``).

``senders``: one authenticated connection per sender of its share. The exchange with the
orchestrator (``bench/scenarios/ding.py``):

1. connects every sender, says ``ready``;
2. ``go`` (``due_at_ms``, ``start_ns``): at ``start_ns`` each sender sends its ``count``
   DINGs with ``ding.send``, ``window`` in flight per connection, one recipient each (round
   robin over the recipients it shares a group with), a plan with only an SMS step, whose
   ``sms_after_s`` is chosen so that the step falls due at ``due_at_ms`` (wall clock, the
   server's ms; at least ``min_delay_s`` after the DING), or with ``due_spread_ms`` spread
   evenly over that many ms from then, in each sender's order. Records each ``ding.send`` round
   trip, and for every DING its number and its SMS step's ``due_at`` as the reply says;
   says ``created``;
3. ``disconnect`` / ``reconnect``: around the server's restart (``disconnected``,
   ``reconnected``); the senders stay online through the escalation, as people would, and
   get the ``ev.ding.status`` events of their DINGs;
4. ``verify``: pages through every sender's ``ding.sent`` and counts the states of the SMS
   steps; says ``verified``;
5. ``close``: returns.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import msgspec
import trio

from bench.loadgen import WorkerContext, sleep_until_ns
from bench.rivet_client import RequestFailed, Wire
from protocol import ding as pd
from protocol import limits

MAX_ERRORS_KEPT = 5
CONNECT_CONCURRENCY = 32


class _Step(msgspec.Struct, forbid_unknown_fields=False):
    channel: str
    state: str
    due_at: int


class _Recipient(msgspec.Struct, forbid_unknown_fields=False):
    steps: list[_Step]


class _Info(msgspec.Struct, forbid_unknown_fields=False):
    ding_id: str
    created_at: int
    recipients: list[_Recipient]


class _Sent(msgspec.Struct, forbid_unknown_fields=False):
    ding: _Info
    duplicate: bool = False


class _Page(msgspec.Struct, forbid_unknown_fields=False):
    dings: list[_Info]
    next_before: str | None = None


def sms_steps(info: _Info) -> list[_Step]:
    return [s for r in info.recipients for s in r.steps if s.channel == "sms"]


async def _open_all(nursery: trio.Nursery, url: str, tokens: list[str]) -> list[Wire]:
    wires: list[Wire | None] = [None] * len(tokens)
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def open_one(i: int) -> None:
        async with limiter:
            wires[i] = await Wire.open(nursery, url, tokens[i])

    async with trio.open_nursery() as opening:
        for i in range(len(tokens)):
            opening.start_soon(open_one, i)
    return [w for w in wires if w is not None]


async def senders(ctx: WorkerContext) -> dict[str, Any]:
    p = ctx.params
    people: list[list[Any]] = p["senders"]  # [user_id, token, [recipient ids], count]
    window: int = p["window"]
    min_delay_s: int = p["min_delay_s"]
    tokens = [person[1] for person in people]
    dings: list[tuple[int, int]] = []  # (ding number, SMS due_at ms)
    errors: list[str] = []
    failed = 0
    duplicates = 0
    first_ns = last_ns = 0
    async with trio.open_nursery() as nursery:
        with trio.fail_after(p["connect_timeout"]):
            wires = await _open_all(nursery, ctx.url, tokens)
        ctx.send("ready")
        go = await ctx.recv("go")
        due_at_ms: int = go["due_at_ms"]
        due_spread_ms: int = go["due_spread_ms"]

        async def send_all(index: int, wire: Wire) -> None:
            nonlocal failed, duplicates, last_ns
            user_id, _token, recipients, count = people[index]
            todo = iter(range(count))

            async def lane() -> None:
                nonlocal failed, duplicates, last_ns
                for n in todo:
                    target = due_at_ms + due_spread_ms * n // count
                    wait_s = math.ceil((target - time.time() * 1000) / 1000)
                    plan = pd.DingPlan(sms_after_s=max(min_delay_s, wait_s))
                    request = pd.DingSend(
                        rid=0,
                        cmid=f"ding-{user_id}-{n}",
                        recipients=[recipients[n % len(recipients)]],
                        text=f"bench DING {n} from {user_id}",
                        plan=plan,
                    )
                    began = time.monotonic_ns()
                    try:
                        sent = await wire.call(request, _Sent)
                    except RequestFailed as exc:
                        failed += 1
                        if len(errors) < MAX_ERRORS_KEPT:
                            errors.append(repr(exc))
                        continue
                    done = time.monotonic_ns()
                    assert sent is not None
                    ctx.recorder.record(began, done)
                    ctx.count()
                    last_ns = max(last_ns, done)
                    duplicates += int(sent.duplicate)
                    number = pd.ding_number(sent.ding.ding_id)
                    for step in sms_steps(sent.ding):
                        dings.append((number, step.due_at))

            async with trio.open_nursery() as lanes:
                for _ in range(window):
                    lanes.start_soon(lane)

        await sleep_until_ns(go["start_ns"])
        first_ns = time.monotonic_ns()
        async with trio.open_nursery() as sending:
            for i, wire in enumerate(wires):
                sending.start_soon(send_all, i, wire)
        ctx.send(
            "created",
            created=len(ctx.recorder),
            failed=failed,
            duplicates=duplicates,
            errors=errors,
            first_ns=first_ns,
            last_ns=last_ns,
            dings=dings,
        )
        await ctx.recv("disconnect")
        for wire in wires:
            await wire.ws.aclose()
        ctx.send("disconnected")
        await ctx.recv("reconnect")
        with trio.fail_after(p["connect_timeout"]):
            wires = await _open_all(nursery, ctx.url, tokens)
        ctx.send("reconnected", connections=len(wires))
        await ctx.recv("verify")
        states: Counter[str] = Counter()
        listed = 0
        for wire in wires:
            before: str | None = None
            while True:
                page = await wire.call(
                    pd.DingListSent(rid=0, before=before, limit=limits.MAX_PAGE), _Page
                )
                assert page is not None
                for info in page.dings:
                    listed += 1
                    states.update(s.state for s in sms_steps(info))
                if page.next_before is None or not page.dings:
                    break
                before = page.next_before
        ctx.send("verified", listed=listed, sms_states=dict(states))
        await ctx.recv("close")
        for wire in wires:
            await wire.ws.aclose()
        nursery.cancel_scope.cancel()
    return {"senders": len(people)}
