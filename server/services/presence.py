"""Presence and typing: ephemeral, never stored.

Presence goes to a user's accepted contacts and single-chat peers. Group members see each
other's presence and typing only when their client subscribes to the members it is
showing (``presence.subscribe``): a user in many large groups does not cause a fan-out to
every member of every group. Subscriptions are held by this process's hub.
"""

from __future__ import annotations

import msgspec

from protocol import replies
from protocol import requests as rq
from protocol.events import PresenceEvent, TypingEvent
from protocol.ids import conversation_kind, direct_participants
from server import policy
from server.connection import Connection
from server.context import Context

_encoder = msgspec.msgpack.Encoder()


async def audience(ctx: Context, user_id: int) -> set[int]:
    contacts, peers, _ = await _relations(ctx, user_id)
    return policy.presence_audience(contacts=contacts, direct_peers=peers)


async def _relations(ctx: Context, user_id: int) -> tuple[list[int], list[int], list[str]]:
    """The user's accepted contacts, single-chat peers and group ids (past ones included).
    Read at every connect and leave: the narrow reads (peer ids, conversation ids from an
    index), not the contact and membership rows."""
    contacts = await ctx.stores.personal.accepted_contacts(user_id)
    peers = []
    groups = []
    for store in ctx.stores.conversation_stores():
        for conv_id in await store.membership_ids(user_id):
            kind = conversation_kind(conv_id)
            if kind == "direct":
                low, high = direct_participants(conv_id)
                peers.append(high if low == user_id else low)
            elif kind == "group":
                groups.append(conv_id)
    return contacts, peers, groups


async def _group_peers(ctx: Context, user_id: int, groups: list[str]) -> set[int]:
    """Everyone who is a current member of a group ``user_id`` is a current member of: the
    only people a subscription may show them to (a watcher or the watched may have left
    the group since ``presence.subscribe``)."""
    out: set[int] = set()
    for conv_id in groups:
        members = await ctx.members.member_ids(conv_id)
        if user_id in members:
            out.update(members)
    return out


async def announce(ctx: Context, user_id: int, *, online: bool) -> None:
    """Tell the audience and the local watchers that ``user_id`` came online or went away.

    Finding the audience reads the stores, so a quick reconnect's announcement may be
    ready first: one that no longer matches the user's state by the time it is ready is
    dropped (the later one tells the truth), so watchers never end on a stale state."""
    event = PresenceEvent(user=user_id, online=online)
    contacts, peers, groups = await _relations(ctx, user_id)
    users = policy.presence_audience(contacts=contacts, direct_peers=peers)
    # Group members are read only when someone watches: most users have no watcher.
    shown = await _group_peers(ctx, user_id, groups) if ctx.hub.watchers_of(user_id) else set()
    if ctx.hub.is_online(user_id) != online:
        return
    ctx.publish(users, event)
    frame = _encoder.encode(event)
    for watcher in ctx.hub.watchers_of(user_id):
        # Never a stranger: a subscription shows a member only while both are in a group.
        if watcher.user_id in shown:
            watcher.send_nowait(frame)


async def subscribe(ctx: Context, conn: Connection, req: rq.PresenceSubscribe) -> replies.Done:
    """Replace the set of users this connection is shown; it gets their state at once.
    Only members of a group the caller is in can be watched, so presence never leaks to
    strangers."""
    user = conn.user_id
    assert user is not None
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    policy.may_write(await ctx.conversations(req.conv).get_member(req.conv, user))
    members = set(await ctx.members.member_ids(req.conv))
    users = frozenset(u for u in req.users if u in members)
    ctx.hub.watch(conn, users)
    for user_id in sorted(users):
        event = PresenceEvent(user=user_id, online=ctx.hub.is_online(user_id))
        conn.send_nowait(_encoder.encode(event))
    return replies.Done()


async def typing(ctx: Context, conn: Connection, req: rq.Typing) -> replies.Done:
    user = conn.user_id
    assert user is not None
    if conversation_kind(req.conv) == "group":
        policy.may_write(await ctx.conversations(req.conv).get_member(req.conv, user))
        members = set(await ctx.members.member_ids(req.conv))
        frame = _encoder.encode(TypingEvent(conv=req.conv, user=user))
        for watcher in ctx.hub.watchers_of(user):
            # Only members of this group who are showing the typist see it.
            if watcher.user_id != user and watcher.user_id in members:
                watcher.send_nowait(frame)
    else:
        peer = policy.direct_peer(user, req.conv)
        # Before the first message too (the chat exists from it on, and anyone may send
        # it), but never to a peer who blocked the typist.
        if peer != user and not await _blocked_by(ctx, peer, user):
            ctx.publish([peer], TypingEvent(conv=req.conv, user=user))
    return replies.Done()


async def _blocked_by(ctx: Context, blocker: int, user: int) -> bool:
    """M5: the peer blocked the typist. Their typing is dropped without a word: the blocked
    user is not told of a block (docs/protocol.md, ``contacts.block``)."""
    row = await ctx.stores.personal.get_contact(blocker, user)
    return row is not None and row.state == "blocked"
