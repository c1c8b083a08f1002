"""DING ops (G1-G3): send, cancel, confirm, read, re-DING, get and the two lists.

Every decision is asked of ``server.policy``; the DING machinery (timers, outbox relay,
events) is ``ctx.ding`` (``server.ding.runtime``). A write that may have committed is always
seen through to its events and timers (shielded), as ``msg.send`` does.

D2/D3: a DING id names its store (``x:<n>`` cross-domain, ``o<org>:<n>`` organisation
``org``'s), so every op reaches its DING without a lookup; ``policy.ding_store_for`` places a
new one. The two lists merge both stores (``_merged``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import msgspec
import trio

from protocol import ding as pd
from protocol import limits
from protocol.errors import ErrorCode, ProtocolError
from server import policy
from server.connection import Connection
from server.context import Context
from server.ding.plan import Plan, resolve_plan, round_steps
from server.ding.quota import payer_org
from server.ding.render import ding_info
from server.outbox import org_copy_effect
from storage.ding import DingStore
from storage.ding_records import Ding, DingDomain, NewDing
from storage.orgs import OrgMember
from storage.records import Member


async def send(ctx: Context, conn: Connection, req: pd.DingSend) -> pd.DingSent:
    caller = _user(conn)
    account = await ctx.enterprise.account_of(caller)
    policy.may_ding_as(account)  # O1
    payer = policy.ding_payer(
        caller, org=req.org, membership=await _membership(ctx, req.org, caller), account=account
    )
    runtime = ctx.ding
    now = ctx.clock.now_ms()
    reachable = await _reachable(ctx, caller, req.recipients)
    blocked_by = set()
    for user in reachable:
        row = await ctx.stores.personal.get_contact(user, caller)
        if row is not None and row.state == "blocked":
            blocked_by.add(user)
    recipients = policy.may_ding(
        sender=caller, recipients=req.recipients, reachable=reachable, blocked_by=blocked_by
    )
    accounts = {user: await ctx.enterprise.account_of(user) for user in recipients}
    accounts[caller] = account
    org = policy.ding_store_for(sender=caller, recipients=recipients, accounts=accounts)
    store = runtime.stores["org" if org is not None else "cross"]
    plan = resolve_plan(req.plan, default=runtime.settings.default_plan)
    send_at = policy.ding_send_time(
        send_at=req.send_at, now=now, horizon_ms=limits.MAX_DING_DELAY_SECONDS * 1000
    )
    _admit(ctx, recipients)
    released = send_at == now
    new = NewDing(
        sender=caller,
        payer=payer,
        text=req.text,
        cmid=req.cmid,
        fingerprint=_fingerprint(req, recipients, plan),
        state="sent" if released else "scheduled",
        created_at=now,
        send_at=send_at,
        sms_after_s=plan.sms_after_s,
        call_after_s=plan.call_after_s,
        recipients=tuple(recipients),
        steps=tuple(round_steps(recipients, start_ms=send_at, plan=plan, released=released)),
        # D4 (as for messages): the organisations the sender belongs to now, recorded in the
        # DING's transaction; the outbox relay applies the consent rule to each at the
        # DING's creation time and copies its text (nothing of its recipients).
        effects=org_copy_effect(await ctx.org_index.orgs_of(caller)),
    )
    with trio.CancelScope(shield=True):
        created = await store.create(new)
        ding = created.ding
        if not created.duplicate:
            if new.effects:
                ctx.outbox.kick()
            runtime.schedule(ding)
            if released:
                await runtime.publish_round(ding, recipients)
            ding = await _reload(ctx, ding)
    return pd.DingSent(ding=ding_info(ding, caller), duplicate=created.duplicate)


async def cancel(ctx: Context, conn: Connection, req: pd.DingCancel) -> pd.Ding:
    caller = _user(conn)
    ding = await _load(ctx, req.ding_id)
    policy.may_cancel_ding(ding, caller)
    with trio.CancelScope(shield=True):
        cancelled = await ctx.ding.store_of(ding).cancel(ding.ding_id, now=ctx.clock.now_ms())
        if cancelled is not None:
            ctx.ding.refunds_due()
            ctx.ding.publish_state(cancelled)
    if cancelled is None:
        # It went out (or was cancelled) since it was read: say so.
        policy.may_cancel_ding(await _load(ctx, req.ding_id), caller)
        raise ProtocolError(ErrorCode.INVALID_STATE, "the DING is no longer scheduled")
    return pd.Ding(ding=ding_info(cancelled, caller))


async def confirm(ctx: Context, conn: Connection, req: pd.DingConfirm) -> pd.Ding:
    """G1: once this reply is sent, no further step starts for the caller."""
    caller = _user(conn)
    ding = await _load(ctx, req.ding_id)
    policy.may_answer_ding(ding, caller)
    with trio.CancelScope(shield=True):
        change = await ctx.ding.store_of(ding).confirm(ding.ding_id, caller, now=ctx.clock.now_ms())
        if change is not None:
            ctx.ding.refunds_due()  # G2: a withdrawn or overdue step gives its unit back
            ctx.ding.publish_change(change)
    if change is None:
        raise policy.ding_not_found()
    return pd.Ding(ding=ding_info(change.ding, caller))


async def read(ctx: Context, conn: Connection, req: pd.DingRead) -> pd.Ding:
    caller = _user(conn)
    ding = await _load(ctx, req.ding_id)
    policy.may_answer_ding(ding, caller)
    row = ding.recipient(caller)
    if row is not None and row.read_at is not None:
        return pd.Ding(ding=ding_info(ding, caller))
    with trio.CancelScope(shield=True):
        change = await ctx.ding.store_of(ding).mark_read(
            ding.ding_id, caller, now=ctx.clock.now_ms()
        )
        if change is not None:
            ctx.ding.publish_change(change)
    if change is None:
        raise policy.ding_not_found()
    return pd.Ding(ding=ding_info(change.ding, caller))


async def redding(ctx: Context, conn: Connection, req: pd.DingRedding) -> pd.Ding:
    """G3: a new round for the recipients who have not confirmed: the in-app DING again now,
    and their escalation restarted from now by the DING's plan."""
    caller = _user(conn)
    runtime = ctx.ding
    ding = await _load(ctx, req.ding_id)
    now = ctx.clock.now_ms()
    interval = runtime.settings.redding_interval_ms
    unconfirmed = policy.may_redding(ding, caller, now=now, interval_ms=interval)
    _admit(ctx, unconfirmed)
    plan = Plan(sms_after_s=ding.sms_after_s, call_after_s=ding.call_after_s)
    steps = round_steps(unconfirmed, start_ms=now, plan=plan, released=True)
    shown: Ding | None = None
    with trio.CancelScope(shield=True):
        again = await runtime.store_of(ding).redding(
            ding.ding_id, expect_round=ding.round, now=now, steps=steps
        )
        if again is not None:
            runtime.refunds_due()
            runtime.schedule(again)
            await runtime.publish_round(again, unconfirmed)
            shown = await _reload(ctx, again)
    if shown is None:
        # Another re-DING went first: answer as if this one came after it.
        policy.may_redding(await _load(ctx, req.ding_id), caller, now=now, interval_ms=interval)
        raise ProtocolError(ErrorCode.INVALID_STATE, "the DING changed: try again")
    return pd.Ding(ding=ding_info(shown, caller))


async def get(ctx: Context, conn: Connection, req: pd.DingGet) -> pd.Ding:
    caller = _user(conn)
    ding = await _load(ctx, req.ding_id)
    if policy.ding_viewer(ding, caller) == "recipient":
        ding = await _delivered(ctx, ding, caller)
    return pd.Ding(ding=ding_info(ding, caller))


async def list_sent(ctx: Context, conn: Connection, req: pd.DingListSent) -> pd.DingPage:
    caller = _user(conn)

    def fetch(store: DingStore, before: int | None, limit: int) -> Awaitable[list[Ding]]:
        return store.list_sent(caller, before=before, limit=limit)

    page, cursor = await _merged(ctx, fetch, req.before, req.limit)
    return _page(page, caller, cursor)


async def list_received(ctx: Context, conn: Connection, req: pd.DingListReceived) -> pd.DingPage:
    """A recipient listing a DING has it: it counts as delivered (G3)."""
    caller = _user(conn)

    def fetch(store: DingStore, before: int | None, limit: int) -> Awaitable[list[Ding]]:
        return store.list_received(caller, before=before, limit=limit)

    page, cursor = await _merged(ctx, fetch, req.before, req.limit)
    page = [await _delivered(ctx, ding, caller) for ding in page]
    return _page(page, caller, cursor)


# --- helpers ------------------------------------------------------------------------------------


async def _membership(ctx: Context, org_id: int | None, user_id: int) -> OrgMember | None:
    """The caller's membership of the organisation a DING names (G2), None if it names
    none, or the organisation does not exist or is dissolving (O4)."""
    if org_id is None:
        return None
    org = await ctx.stores.orgs.get_org(org_id)
    if org is None or org.dissolving_at is not None:
        return None
    return await ctx.stores.orgs.get_member(org_id, user_id)


async def _reachable(ctx: Context, caller: int, users: list[int]) -> set[int]:
    """G1: which of ``users`` share a conversation with the caller (both current members of
    one single chat or group, in either conversation store, D2/D3) or an organisation (both
    current members of it, enterprise accounts included)."""
    mine = {m.conv_id for m in await _memberships(ctx, caller) if m.active}
    my_orgs = set(await ctx.org_index.orgs_of(caller))
    found: set[int] = set()
    for user in set(users) - {caller}:
        if my_orgs.intersection(await ctx.org_index.orgs_of(user)):
            found.add(user)
            continue
        theirs = await _memberships(ctx, user)
        if any(m.active and m.conv_id in mine for m in theirs):
            found.add(user)
    return found


async def _memberships(ctx: Context, user: int) -> list[Member]:
    return [m for store in ctx.stores.conversation_stores() for m in await store.memberships(user)]


def _admit(ctx: Context, recipients: list[int]) -> None:
    """C2: the per-recipient limit (the per-sender one is the router's ``ding`` budget)."""
    wait = ctx.ding.limits.admit(recipients, trio.current_time())
    if wait > 0.0:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            "a recipient has been sent too many DINGs: try later",
            retry_after=round(wait, 3),
        )


async def _delivered(ctx: Context, ding: Ding, caller: int) -> Ding:
    row = ding.recipient(caller)
    if row is None or row.delivered_at is not None:
        return ding
    with trio.CancelScope(shield=True):
        changes = await ctx.ding.store_of(ding).mark_delivered(
            ding.ding_id, [caller], now=ctx.clock.now_ms()
        )
        for change in changes:
            ctx.ding.publish_change(change)
    return changes[0].ding if changes else ding


async def _load(ctx: Context, ding_id: str) -> Ding:
    """The DING an id names, from the store the id names (D2/D3). An organisation DING id
    whose number belongs to another organisation, or of an organisation that is gone or
    dissolving (O4), is a DING that does not exist."""
    org, number = pd.parse_ding_id(ding_id)
    ding = await ctx.ding.stores["cross" if org is None else "org"].get(number)
    if ding is None:
        raise policy.ding_not_found()
    if org is not None:
        found = await ctx.stores.orgs.get_org(org)
        if payer_org(ding.payer) != org or found is None or found.dissolving_at is not None:
            raise policy.ding_not_found()
    return ding


async def _reload(ctx: Context, ding: Ding) -> Ding:
    """``ding`` as stored now (after the events it caused, e.g. deliveries)."""
    fresh = await ctx.ding.store_of(ding).get(ding.ding_id)
    return fresh if fresh is not None else ding


#: The prefix of each store's position in a ``DingCursor``.
_CURSOR_PREFIX: dict[DingDomain, str] = {"cross": "x", "org": "o"}

Fetch = Callable[[DingStore, "int | None", int], Awaitable[list[Ding]]]


async def _merged(
    ctx: Context, fetch: Fetch, cursor: str | None, limit: int
) -> tuple[list[Ding], str | None]:
    """D2/D3: one list over both DING stores, newest first, and the cursor of the next page.

    Each store lists by its own numbers, newest first, below its position in the cursor (a
    store the cursor does not name from its newest). The two lists are merged by creation
    time (ties: the organisation's first) and the first ``limit`` kept; the next cursor is,
    for each store, the number of the last DING taken from it (or its old position if none
    was). So every DING is listed exactly once across pages, whichever store keeps it."""
    positions = {} if cursor is None else pd.parse_ding_cursor(cursor)
    heads: dict[DingDomain, list[Ding]] = {}
    for domain, store in ctx.ding.stores.items():
        heads[domain] = await fetch(store, positions.get(_CURSOR_PREFIX[domain]), limit)
    page: list[Ding] = []
    taken = {domain: 0 for domain in heads}
    while len(page) < limit:
        candidates = [d for d in heads if taken[d] < len(heads[d])]
        if not candidates:
            break
        best = max(candidates, key=lambda d: (heads[d][taken[d]].created_at, d == "org"))
        page.append(heads[best][taken[best]])
        taken[best] += 1
    for domain, count in taken.items():
        if count:
            positions[_CURSOR_PREFIX[domain]] = heads[domain][count - 1].ding_id
    return page, (pd.ding_cursor(positions) if len(page) == limit else None)


def _page(dings: list[Ding], caller: int, cursor: str | None) -> pd.DingPage:
    return pd.DingPage(dings=[ding_info(d, caller) for d in dings], next_before=cursor)


def _fingerprint(req: pd.DingSend, recipients: list[int], plan: Plan) -> bytes:
    """What a resend with the same cmid must repeat to count as the same DING."""
    shape: list[object] = [
        sorted(recipients),
        req.text,
        plan.sms_after_s,
        plan.call_after_s,
        req.send_at,
    ]
    if req.org is not None:
        shape.append(req.org)  # absent when null: fingerprints of earlier DINGs still match
    return hashlib.sha256(msgspec.msgpack.encode(shape)).digest()


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id
