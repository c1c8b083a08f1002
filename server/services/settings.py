"""Notification preferences (M3): switch off new-message notifications, mute a
conversation. Settings are personal data (D1) and sync to all the user's devices."""

from __future__ import annotations

import msgspec

from protocol import replies
from protocol import requests as rq
from protocol.events import SettingsEvent
from server import policy
from server.connection import Connection
from server.context import Context

_encoder = msgspec.msgpack.Encoder()


async def set_notifications(ctx: Context, conn: Connection, req: rq.SettingsSet) -> replies.Done:
    user = conn.user_id
    assert user is not None
    event = SettingsEvent(pstream=0, notifications=req.notifications)
    change = await ctx.stores.personal.write_settings(
        user,
        notifications=req.notifications,
        event_body=_encoder.encode(event),
        now=ctx.clock.now_ms(),
    )
    ctx.pushes.forget(user)
    ctx.publish([user], msgspec.structs.replace(event, pstream=change.pstream))
    return replies.Done()


async def mute_conversation(ctx: Context, conn: Connection, req: rq.ConvMute) -> replies.Done:
    user = conn.user_id
    assert user is not None
    policy.may_read(await ctx.conversations(req.conv).get_member(req.conv, user))
    settings = await ctx.stores.personal.get_settings(user)
    event = SettingsEvent(
        pstream=0, notifications=settings.notifications, conv=req.conv, conv_muted=req.muted
    )
    change = await ctx.stores.personal.write_settings(
        user,
        mute_conversation=(req.conv, req.muted),
        event_body=_encoder.encode(event),
        now=ctx.clock.now_ms(),
    )
    ctx.pushes.forget(user)
    ctx.publish([user], msgspec.structs.replace(event, pstream=change.pstream))
    return replies.Done()
