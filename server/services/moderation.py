"""C1: users report a message or a user to the platform's moderators (``report``).

The report is stored durably in the moderation store with, for a message, a copy of its
content as evidence (the sender may recall it afterwards). What moderators do with it is an
operator command (``rivet moderate``), see ``server.moderation``. Repeating a report that is
still open returns the first one.
"""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode, ProtocolError
from protocol.moderation import Report, Reported
from server import policy
from server.connection import Connection
from server.context import Context
from storage.moderation import NewReport

log = logging.getLogger(__name__)


async def report(ctx: Context, conn: Connection, req: Report) -> Reported:
    assert conn.user_id is not None
    caller = conn.user_id
    if (req.user is None) == (req.conv is None):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "report either a user, or a message (conv and seq)", path="$"
        )
    now = ctx.clock.now_ms()
    if req.conv is not None:
        if req.seq is None:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "a message report needs seq", path="$.seq")
        cross = ctx.conversations(req.conv)
        member = await cross.get_member(req.conv, caller)
        entry = await cross.get_entry(req.conv, req.seq) if member is not None else None
        entry = policy.may_report_message(reporter=caller, member=member, entry=entry)
        new = NewReport(
            reporter=caller,
            target_user=entry.sender,
            conv_id=req.conv,
            seq=req.seq,
            reason=req.reason,
            note=req.note,
            evidence=None if entry.recalled else entry.body,
            created_at=now,
        )
    else:
        assert req.user is not None
        target = await ctx.stores.personal.get_user(req.user)
        policy.may_report_user(reporter=caller, target=req.user, exists=policy.exists(target))
        new = NewReport(
            reporter=caller, target_user=req.user, reason=req.reason, note=req.note, created_at=now
        )
    record, duplicate = await ctx.stores.moderation.add_report(new)
    if not duplicate:
        log.info(
            "report received",
            extra={"report_id": record.report_id, "reporter": caller, "reason": req.reason},
        )
    return Reported(report_id=record.report_id, duplicate=duplicate)
