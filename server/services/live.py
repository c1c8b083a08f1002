"""Group live streams (L1): start, link, join, leave, viewers, invitations, hands and
co-hosts, the WebRTC relay, likes, ending and resuming.

Each handler loads what ``server.policy`` needs, asks it, and then changes the in-memory
state (``ctx.live``) without awaiting in between the last check and the change; a stream
that ended while a handler awaited is reported as not found. The record of each stream is
written to the store of the group it started in when it starts, links, invites and ends.

Who hears what: ``ev.live.started``/``ended``/``invited`` go through the bus to the members
of the stream's groups, its invited users and its participants; everything else goes only
to participating connections (``server.live``), the counts coalesced once per interval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio

from protocol import live as pl
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import conversation_kind
from protocol.replies import Done
from server import policy
from server.background import REFUSED
from server.connection import Connection
from server.context import Context
from server.live import LiveStream
from storage.errors import StoreError
from storage.live import NewLive

log = logging.getLogger(__name__)

#: After a failed attempt to end a stream whose host did not come back, try again this soon.
EXPIRY_RETRY_SECONDS = 5.0


# --- starting and finding a stream -----------------------------------------------------------


async def start(ctx: Context, conn: Connection, req: pl.LiveStart) -> pl.LiveJoined:
    caller, device = _who(conn)
    policy.may_go_live_as(await ctx.enterprise.account_of(caller))  # O1
    groups = list(dict.fromkeys([req.conv, *req.link_groups]))
    policy.may_link_live(linked=0, adding=len(groups) - 1, origin=req.conv, groups=groups)
    for group in groups:
        await _may_go_live(ctx, group, caller)
    registry = ctx.live.registry
    policy.may_claim_live_groups(registry.taken(groups))
    registry.claim(groups)
    try:
        # Shielded: once the record is written, the stream must be registered too.
        with trio.CancelScope(shield=True):
            record = await ctx.live.store_for(req.conv).start_live(
                NewLive(
                    origin=req.conv,
                    host=caller,
                    host_device=device,
                    title=req.title,
                    description=req.description,
                    links=tuple(groups[1:]),
                    started_at=ctx.clock.now_ms(),
                )
            )
    finally:
        registry.unclaim(groups)
    stream = LiveStream.from_record(record)
    registry.add(stream)
    registry.set_host(stream, conn)
    ctx.publish(await _audience(ctx, stream), pl.LiveStartedEvent(live=live_info(stream)))
    return _joined(stream, conn)


async def link(ctx: Context, conn: Connection, req: pl.LiveLink) -> pl.LiveState:
    caller, _ = _who(conn)
    stream = _find(ctx, req.live_id)
    await _require_host(ctx, conn, stream)
    groups = [g for g in dict.fromkeys(req.groups) if g not in stream.groups]
    for group in groups:
        await _may_go_live(ctx, group, caller)
    _still_live(stream)
    policy.may_link_live(
        linked=len(stream.links), adding=len(groups), origin=stream.origin, groups=groups
    )
    registry = ctx.live.registry
    policy.may_claim_live_groups(registry.taken(groups))
    if groups:
        registry.claim(groups)
        try:
            with trio.CancelScope(shield=True):
                linked = await ctx.live.store_for(stream.origin).add_live_links(
                    stream.origin, stream.number, groups=groups
                )
        finally:
            registry.unclaim(groups)
        _still_live(stream)
        if not linked:
            raise policy.live_not_found()
        registry.link(stream, groups)
        members = await _members(ctx, groups)
        ctx.publish(members, pl.LiveStartedEvent(live=live_info(stream)))
    return pl.LiveState(live=live_info(stream))


async def active(ctx: Context, conn: Connection, req: pl.LiveActive) -> pl.LiveState:
    caller, _ = _who(conn)
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    policy.may_write(await ctx.conversations(req.conv).get_member(req.conv, caller))
    stream = ctx.live.registry.active_in(req.conv)
    return pl.LiveState(live=None if stream is None else live_info(stream))


# --- taking part -------------------------------------------------------------------------------


async def join(ctx: Context, conn: Connection, req: pl.LiveJoin) -> pl.LiveJoined:
    caller, _ = _who(conn)
    stream = _find(ctx, req.live_id)
    member = caller != stream.host and await _member_of_groups(ctx, stream, caller)
    _still_live(stream)
    policy.may_watch_live(
        is_host=caller == stream.host,
        member_of_groups=member,
        invited=caller in stream.invited,
        removed=caller in stream.removed,
    )
    if stream.role_of(conn) is None:
        ctx.live.registry.join(stream, conn)
    return _joined(stream, conn)


async def leave(ctx: Context, conn: Connection, req: pl.LiveLeave) -> Done:
    stream = _find(ctx, req.live_id)
    policy.may_leave_live(stream.role_of(conn))
    departure = ctx.live.registry.leave(stream, conn)
    assert departure is not None
    ctx.live.announce_departure(stream, departure)
    return Done()


async def viewers(ctx: Context, conn: Connection, req: pl.LiveViewers) -> pl.LiveViewerPage:
    stream = _find(ctx, req.live_id)
    policy.may_take_part(stream.role_of(conn))
    page = stream.viewer_page(after=req.after, limit=req.limit)
    return pl.LiveViewerPage(
        live_id=stream.live_id,
        viewers=page,
        next_after=page[-1] if len(page) == req.limit else None,
    )


async def invite(ctx: Context, conn: Connection, req: pl.LiveInvite) -> Done:
    stream = _find(ctx, req.live_id)
    await _require_host(ctx, conn, stream)
    users = sorted(set(req.users) - {stream.host})
    policy.may_invite_live(invited=len(stream.invited), adding=len(set(users) - stream.invited))
    found = {u.user_id for u in await ctx.stores.personal.get_users(users) if policy.exists(u)}
    missing = [u for u in users if u not in found]
    if missing:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no such user: {missing[0]}")
    _still_live(stream)
    if users:
        with trio.CancelScope(shield=True):
            invited = await ctx.live.store_for(stream.origin).add_live_invites(
                stream.origin, stream.number, users=users
            )
        _still_live(stream)
        if not invited:
            raise policy.live_not_found()
        stream.invited.update(users)
        stream.removed.difference_update(users)
        ctx.publish(users, pl.LiveInvitedEvent(live=live_info(stream)))
    return Done()


# --- hands and co-hosts -----------------------------------------------------------------------


async def raise_hand(ctx: Context, conn: Connection, req: pl.LiveRaiseHand) -> Done:
    user, device = _who(conn)
    stream = _find(ctx, req.live_id)
    policy.may_raise_hand(stream.role_of(conn), user_on_stage=user in stream.cohosts)
    changed = ctx.live.registry.raise_hand(stream, conn, raised=req.raised)
    if changed and stream.host_conn is not None:
        event = pl.LiveHandEvent(
            live_id=stream.live_id, user=user, device=device, raised=req.raised
        )
        ctx.live.send([stream.host_conn], event)
    return Done()


async def answer_hand(ctx: Context, conn: Connection, req: pl.LiveAnswerHand) -> Done:
    stream = _find(ctx, req.live_id)
    await _require_host(ctx, conn, stream)
    policy.may_answer_hand(
        raised=req.user in stream.hands,
        accept=req.accept,
        cohosts=len(stream.cohosts),
        max_cohosts=ctx.live.max_cohosts,
    )
    asking = ctx.live.registry.answer_hand(stream, req.user, accept=req.accept)
    assert asking.device_id is not None
    if req.accept:
        cohost = pl.LiveCohostEvent(
            live_id=stream.live_id, user=req.user, device=asking.device_id, cohost=True
        )
        ctx.live.send_all(stream, cohost)
    else:
        declined = pl.LiveHandEvent(
            live_id=stream.live_id, user=req.user, device=asking.device_id, raised=False
        )
        ctx.live.send([asking], declined)
    return Done()


async def remove(ctx: Context, conn: Connection, req: pl.LiveRemove) -> Done:
    """A co-host goes back to watching; a viewer is removed and may not join again."""
    stream = _find(ctx, req.live_id)
    await _require_host(ctx, conn, stream)
    policy.may_remove_from_live(
        host=stream.host, target=req.user, present=req.user in stream.viewers
    )
    live = ctx.live
    on_stage = live.registry.step_down(stream, req.user)
    if on_stage is not None:
        assert on_stage.device_id is not None
        event = pl.LiveCohostEvent(
            live_id=stream.live_id, user=req.user, device=on_stage.device_id, cohost=False
        )
        live.send_all(stream, event)
        return Done()
    removed = list(stream.viewers[req.user])
    for departure in live.registry.remove_user(stream, req.user):
        live.announce_departure(stream, departure)
    live.send(removed, pl.LiveRemovedEvent(live_id=stream.live_id))
    return Done()


# --- the relay and likes --------------------------------------------------------------------


async def signal(ctx: Context, conn: Connection, req: pl.LiveSignal) -> Done:
    """Relay one WebRTC message to one device; never stored."""
    user, device = _who(conn)
    stream = ctx.live.registry.get(req.live_id)
    if stream is None or stream.ended:
        raise policy.live_not_found()
    target = stream.device_conn(req.to_device)
    policy.may_signal(
        sender=stream.role_of(conn),
        target=None if target is None else stream.role_of(target),
        same_device=req.to_device == device,
    )
    assert target is not None
    event = pl.LiveSignalEvent(
        live_id=stream.live_id,
        from_user=user,
        from_device=device,
        kind=req.kind,
        payload=req.payload,
    )
    ctx.live.send([target], event)
    return Done()


async def like(ctx: Context, conn: Connection, req: pl.LiveLike) -> Done:
    stream = _find(ctx, req.live_id)
    policy.may_take_part(stream.role_of(conn))
    ctx.live.registry.like(stream, req.count)
    return Done()


# --- ending and resuming --------------------------------------------------------------------


async def end(ctx: Context, conn: Connection, req: pl.LiveEnd) -> pl.LiveSummary:
    caller, _ = _who(conn)
    stream = _find(ctx, req.live_id)
    origin_member = None
    visible = True
    if caller != stream.host:
        origin_member = await ctx.conversations(stream.origin).get_member(stream.origin, caller)
        visible = await _visible(ctx, conn, stream)
        _still_live(stream)
    reason = policy.may_end_live(
        caller=caller, host=stream.host, origin_member=origin_member, visible=visible
    )
    return await end_stream(ctx, stream, reason)


async def resume(ctx: Context, conn: Connection, req: pl.LiveResume) -> pl.LiveJoined:
    """The host takes the stream back on this connection."""
    stream = _find(ctx, req.live_id)
    await _require_host(ctx, conn, stream)
    ctx.live.host_back(stream, conn)
    return _joined(stream, conn)


async def end_stream(ctx: Context, stream: LiveStream, reason: pl.LiveEndReason) -> pl.LiveSummary:
    """Complete the record, forget the stream, tell its audience. The record is written
    first: if that fails the stream goes on and the caller gets the error."""
    _still_live(stream)
    stream.ended = True  # no join, link or second end gets past _still_live from here
    try:
        with trio.CancelScope(shield=True):
            record = await ctx.live.store_for(stream.origin).end_live(
                stream.origin,
                stream.number,
                ended_at=ctx.clock.now_ms(),
                reason=reason,
                peak_viewers=stream.peak,
                total_viewers=stream.total_viewers,
            )
    except BaseException:
        stream.ended = False
        raise
    participants = stream.participant_users()
    ctx.live.forget(stream)
    assert record is not None and record.ended_at is not None
    summary = pl.LiveSummary(
        live_id=stream.live_id,
        reason=reason,
        ended_at=record.ended_at,
        peak_viewers=record.peak_viewers,
        total_viewers=record.total_viewers,
    )
    ended = pl.LiveEndedEvent(
        live_id=stream.live_id,
        reason=reason,
        ended_at=record.ended_at,
        peak_viewers=record.peak_viewers,
        total_viewers=record.total_viewers,
    )
    ctx.publish(await _audience(ctx, stream, participants=participants), ended)
    return summary


async def expire(ctx: Context, live_id: str) -> None:
    """The grace period of a stream's host passed: end it, unless they came back. If the
    record cannot be completed (a full disk), try again in ``EXPIRY_RETRY_SECONDS``."""
    stream = ctx.live.registry.get(live_id)
    if stream is None or stream.ended or stream.host_conn is not None:
        return
    try:
        await end_stream(ctx, stream, "host_left")
    except StoreError as error:
        retry = EXPIRY_RETRY_SECONDS
        if isinstance(error, REFUSED):
            # Logged once per outage (every stream's expiry shares it); retries back off.
            retry = max(retry, ctx.live.outage.refused(error))
        else:
            log.exception("ending a live stream failed; will retry", extra={"live_id": live_id})
        ctx.live.grace.arm(live_id, trio.current_time() + retry)
        return
    ctx.live.outage.over()


async def run(
    ctx: Context, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The live background service (restore, counts, grace timers) for the app's nursery."""

    async def expire_in_ctx(live_id: str) -> None:
        await expire(ctx, live_id)

    await ctx.live.run(expire_in_ctx, task_status=task_status)


# --- views -------------------------------------------------------------------------------------


def live_info(stream: LiveStream) -> pl.LiveInfo:
    return pl.LiveInfo(
        live_id=stream.live_id,
        conv=stream.origin,
        host=stream.host,
        title=stream.title,
        description=stream.description,
        groups=stream.groups,
        started_at=stream.started_at,
        host_online=stream.host_conn is not None,
    )


def _joined(stream: LiveStream, conn: Connection) -> pl.LiveJoined:
    role = stream.role_of(conn)
    assert role is not None
    stage = []
    for user, on_stage, part in stream.stage():
        assert on_stage.device_id is not None
        stage.append(pl.StageMember(user=user, device=on_stage.device_id, role=part))
    return pl.LiveJoined(
        live=live_info(stream),
        role=role,
        stage=stage,
        viewers=stream.viewer_count,
        total_likes=stream.likes_total,
        hands=sorted(stream.hands) if role == "host" else [],
    )


# --- helpers ---------------------------------------------------------------------------------


def _who(conn: Connection) -> tuple[int, int]:
    assert conn.user_id is not None and conn.device_id is not None
    return conn.user_id, conn.device_id


def _find(ctx: Context, live_id: str) -> LiveStream:
    stream = ctx.live.registry.get(live_id)
    if stream is None:
        raise policy.live_not_found()
    return _still_live(stream)


def _still_live(stream: LiveStream) -> LiveStream:
    """After an await: the stream may have ended meanwhile."""
    if stream.ended:
        raise policy.live_not_found()
    return stream


async def _may_go_live(ctx: Context, group: str, caller: int) -> None:
    if conversation_kind(group) != "group":
        raise policy.not_found()
    policy.may_go_live(
        conversation=await ctx.conversations(group).get_conversation(group),
        member=await ctx.conversations(group).get_member(group, caller),
    )


async def _member_of_groups(ctx: Context, stream: LiveStream, user: int) -> bool:
    """Whether ``user`` is a current member of one of the stream's groups. Uses the member
    cache and a set view of it, so a join storm reads no store."""
    for group in list(stream.groups):
        ids = await ctx.members.member_ids(group)
        if user in ctx.live.member_view(group, ids):
            return True
    return False


async def _visible(ctx: Context, conn: Connection, stream: LiveStream) -> bool:
    user, _ = _who(conn)
    if stream.role_of(conn) is not None or user in stream.invited:
        return True
    return await _member_of_groups(ctx, stream, user)


async def _require_host(ctx: Context, conn: Connection, stream: LiveStream) -> None:
    caller, _ = _who(conn)
    visible = caller == stream.host or await _visible(ctx, conn, stream)
    _still_live(stream)
    policy.may_host_live(caller=caller, host=stream.host, visible=visible)


async def _members(ctx: Context, groups: Iterable[str]) -> set[int]:
    members: set[int] = set()
    for group in groups:
        members.update(await ctx.members.member_ids(group))
    return members


async def _audience(
    ctx: Context, stream: LiveStream, *, participants: Iterable[int] = ()
) -> set[int]:
    return policy.live_audience(
        members=await _members(ctx, stream.groups),
        invited=stream.invited,
        participants=set(participants) | stream.participant_users(),
    )
