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

_personal_decoder = msgspec.msgpack.Decoder(ContactEvent | SettingsEvent)


def personal_event(pstream: int, body: bytes) -> ContactEvent | SettingsEvent:
    """A personal-stream entry as an event (the body was stored with ``pstream`` 0)."""
    event: ContactEvent | SettingsEvent = _personal_decoder.decode(body)
    return msgspec.structs.replace(event, pstream=pstream)


async def sync(ctx: Context, conn: Connection, req: rq.Sync) -> replies.SyncPage:
    user = conn.user_id
    assert user is not None
    cross, personal = ctx.stores.cross, ctx.stores.personal
    # Read the heads first: everything at or below them is committed and will be in the
    # pages below; anything later is pushed live (see the module docstring).
    head = SyncToken(await cross.head(), await personal.personal_head())
    token = SyncToken.decode(req.token) if req.token is not None else None
    settings = await personal.get_settings(user)
    summaries: list[replies.ConversationSummary] = []
    if token is None or req.summary:
        changed_after = 0 if token is None else token.conversations
        for item in await cross.summaries(user, changed_after=changed_after):
            muted = item.conversation.conv_id in settings.muted_conversations
            summaries.append(summary(item, muted=muted))
    if token is None:
        # A new device starts from the summary, at the current head.
        return replies.SyncPage(token=head.encode(), summaries=summaries, events=[], more=False)

    events: list[SyncEvent] = []
    entries = await cross.entries_for(user, after=token.conversations, limit=req.limit + 1)
    more_conversations = len(entries) > req.limit
    entries = entries[: req.limit]
    events.extend(entry_event(e) for e in entries)
    conversations_at = (
        entries[-1].stream
        if more_conversations
        else max(head.conversations, entries[-1].stream if entries else 0, token.conversations)
    )
    room = req.limit - len(entries)
    personal_at = token.personal
    more_personal = False
    if room > 0:
        changes = await personal.personal_changes(user, after=token.personal, limit=room + 1)
        more_personal = len(changes) > room
        changes = changes[:room]
        events.extend(personal_event(c.pstream, c.body) for c in changes)
        personal_at = (
            changes[-1].pstream
            if more_personal
            else max(head.personal, changes[-1].pstream if changes else 0, token.personal)
        )
    else:
        # The page is full of conversation events: say "more" only if personal ones wait.
        more_personal = bool(await personal.personal_changes(user, after=token.personal, limit=1))
    next_token = SyncToken(conversations_at, personal_at)
    return replies.SyncPage(
        token=next_token.encode(),
        summaries=summaries,
        events=events,
        more=more_conversations or more_personal,
    )


async def ack(ctx: Context, conn: Connection, req: rq.Ack) -> replies.Done:
    """The device received everything up to the token (per-device delivery state)."""
    assert conn.device_id is not None
    token = SyncToken.decode(req.token)
    await ctx.stores.personal.ack_device(
        conn.device_id, conversations=token.conversations, personal=token.personal
    )
    return replies.Done()
