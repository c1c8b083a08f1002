"""Catch-up: summaries of changed conversations, then the missed events, paged.

Hand-over without a gap: a connection is subscribed to live events as soon as it is
authenticated, before its first ``sync``. An event committed after the stream head that a
``sync`` page read is pushed live; one committed before it is in a page. The client SDK
drops the overlap by (conv, seq) and by stream position.
"""

from __future__ import annotations

import msgspec

from protocol import replies
from protocol import requests as rq
from protocol.events import ContactEvent, SettingsEvent, SyncEvent
from protocol.sync import SyncToken
from server.connection import Connection
from server.context import Context
from server.services.render import entry_event, summary
from storage.records import Summary

_personal_decoder = msgspec.msgpack.Decoder(ContactEvent | SettingsEvent)


def personal_event(pstream: int, body: bytes) -> ContactEvent | SettingsEvent:
    """A personal-stream entry as an event (the body was stored with ``pstream`` 0)."""
    event: ContactEvent | SettingsEvent = _personal_decoder.decode(body)
    return msgspec.structs.replace(event, pstream=pstream)


async def sync(ctx: Context, conn: Connection, req: rq.Sync) -> replies.SyncPage:
    user = conn.user_id
    assert user is not None
    stores = ctx.stores
    # Read the heads first: everything at or below them is committed and will be in the
    # pages below; anything later is pushed live (see the module docstring).
    head = SyncToken(
        await stores.cross.head(),
        await stores.personal.personal_head(),
        await stores.org_conversations.head(),
    )
    token = SyncToken.decode(req.token) if req.token is not None else None
    conversation_streams = (
        (stores.cross, head.conversations, token.conversations if token else 0),
        (stores.org_conversations, head.organisation, token.organisation if token else 0),
    )
    summaries: list[replies.ConversationSummary] = []
    if token is None or req.summary:
        # A stream whose head is at or below the token has nothing committed after it that
        # this page must carry (what commits later is pushed live): it is not read.
        items = [
            item
            for store, head_at, after in conversation_streams
            if head_at > after
            for item in await store.summaries(user, changed_after=after)
        ]
        if items:
            settings = await stores.personal.get_settings(user)
            # Two stores, two position counters: order across them by the latest activity.
            items.sort(key=_last_activity, reverse=True)
            for item in items:
                muted = item.conversation.conv_id in settings.muted_conversations
                summaries.append(summary(item, muted=muted))
    if token is None:
        # A new device starts from the summary, at the current head.
        return replies.SyncPage(token=head.encode(), summaries=summaries, events=[], more=False)

    events: list[SyncEvent] = []
    room = req.limit
    more = False
    positions: list[int] = []
    for store, head_at, after in conversation_streams:
        if head_at <= after:
            # Current (see the summaries above): nothing to read, the position stays.
            positions.append(after)
            continue
        entries = await store.entries_for(user, after=after, limit=room + 1) if room else []
        more_here = (
            len(entries) > room
            if room
            else bool(await store.entries_for(user, after=after, limit=1))
        )
        entries = entries[:room]
        events.extend(entry_event(e) for e in entries)
        room -= len(entries)
        more = more or more_here
        positions.append(
            _next_position(entries[-1].stream if entries else 0, head_at, after, more_here)
        )
    changes = []
    if head.personal <= token.personal:
        more_personal = False
    elif room:
        changes = await stores.personal.personal_changes(user, after=token.personal, limit=room + 1)
        more_personal = len(changes) > room
        changes = changes[:room]
        events.extend(personal_event(c.pstream, c.body) for c in changes)
    else:
        # The page is full: say "more" only if personal entries wait.
        more_personal = bool(
            await stores.personal.personal_changes(user, after=token.personal, limit=1)
        )
    personal_at = _next_position(
        changes[-1].pstream if changes else 0, head.personal, token.personal, more_personal
    )
    next_token = SyncToken(positions[0], personal_at, positions[1])
    return replies.SyncPage(
        token=next_token.encode(),
        summaries=summaries,
        events=events,
        more=more or more_personal,
    )


def _next_position(last_read: int, head: int, after: int, more: bool) -> int:
    """Where the next page of one stream starts: just past what this page read if more
    waits (or where it was, if this page read none of it); else at the head read before
    the page, since everything up to it was in the page."""
    if more:
        return last_read or after
    return max(head, last_read, after)


def _last_activity(item: Summary) -> int:
    last = item.last_message
    return last.ts if last is not None else item.conversation.created_at


async def ack(ctx: Context, conn: Connection, req: rq.Ack) -> replies.Done:
    """The device received everything up to the token (per-device delivery state)."""
    assert conn.device_id is not None
    token = SyncToken.decode(req.token)
    await ctx.stores.personal.ack_device(
        conn.device_id,
        conversations=token.conversations,
        personal=token.personal,
        organisation=token.organisation,
    )
    return replies.Done()
