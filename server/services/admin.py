"""Admin paths (D5): every function here gets an ``OrgView`` — the organisation's own
store, checked by the router's policy module — and nothing else. This module imports no
store and no server context (``tests/server/test_admin_imports.py`` holds it to that), so
it cannot reach personal or cross-domain data even by mistake.

Every admin act is written to the organisation's audit log (P3) and fed live to admins
watching the feed.
"""

from __future__ import annotations

import msgspec

from protocol import orgs as po
from protocol.errors import ErrorCode, ProtocolError
from protocol.replies import Done
from server.connection import Connection
from server.copy_source import copy_origin
from server.org_view import OrgView
from storage.orgs import AuditEntry, OrgCopy

_content_decoder = msgspec.msgpack.Decoder(po.CopyContent)


def copy_info(copy: OrgCopy) -> po.CopyInfo:
    content = None if copy.body is None else _content_decoder.decode(copy.body)
    return po.CopyInfo(
        copy_id=copy.copy_id,
        member=copy.member,
        conv_ref=copy.conv_ref,
        ts=copy.ts,
        content=content,
        hidden=copy.hidden,
        recalled=copy.recalled,
        origin=copy_origin(copy.source),
    )


def audit_info(entry: AuditEntry) -> po.AuditInfo:
    return po.AuditInfo(
        audit_id=entry.audit_id,
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        ts=entry.ts,
    )


def _page(view: OrgView, copies: list[OrgCopy], limit: int) -> po.CopyPage:
    return po.CopyPage(
        org=view.org_id,
        copies=[copy_info(c) for c in copies],
        next_after=copies[-1].copy_id if len(copies) == limit else None,
    )


async def search(view: OrgView, conn: Connection, req: po.AdminSearch) -> po.CopyPage:
    copies = await view.copies(
        member=req.member,
        conv_ref=req.conv_ref,
        from_ts=req.from_ts,
        to_ts=req.to_ts,
        after=req.after,
        limit=req.limit,
    )
    await view.record("search", _filters(req.member, req.conv_ref, req.from_ts, req.to_ts))
    return _page(view, copies, req.limit)


async def export(view: OrgView, conn: Connection, req: po.AdminExport) -> po.CopyPage:
    """One page of the export, hidden copies included (it is the organisation's record).
    The act is logged once, with its first page."""
    copies = await view.copies(
        member=req.member,
        from_ts=req.from_ts,
        to_ts=req.to_ts,
        after=req.after,
        limit=req.limit,
        include_hidden=True,
    )
    if req.after == 0:
        await view.record("export", _filters(req.member, None, req.from_ts, req.to_ts))
    return _page(view, copies, req.limit)


async def counts(view: OrgView, conn: Connection, req: po.AdminCounts) -> po.CopyCounts:
    per_member = await view.copy_counts()
    await view.record("counts", "all")
    return po.CopyCounts(
        org=view.org_id,
        counts=[po.MemberCount(member=m, messages=n) for m, n in sorted(per_member.items())],
    )


async def hide(view: OrgView, conn: Connection, req: po.AdminHide) -> po.CopyResult:
    """O2: hiding a copy changes the organisation's own view. A message of the
    organisation's own conversation (D2) is also withdrawn there for everyone in it (as a
    recall: members see a tombstone), while the organisation's copy keeps its content,
    hidden; showing it again restores only the organisation's view."""
    found = await _existing(view, req.copy_id)
    if req.hidden:
        await view.withdraw_source(found)
    copy = await view.set_copy_state(req.copy_id, hidden=req.hidden)
    await view.record("hide" if req.hidden else "unhide", f"copy:{req.copy_id}")
    return po.CopyResult(copy=copy_info(copy))


async def recall(view: OrgView, conn: Connection, req: po.AdminRecall) -> po.CopyResult:
    """O1: recalling erases the organisation's copy. A message of the organisation's own
    conversation (D2) is recalled there too, for everyone in it; a cross-domain
    conversation, which belongs to its participants, is never touched, and neither is a
    DING (a DING's copy has no source an admin act follows: only the copy changes)."""
    found = await _existing(view, req.copy_id)
    await view.withdraw_source(found)
    copy = await view.set_copy_state(req.copy_id, recalled=True)
    await view.record("recall", f"copy:{req.copy_id}")
    return po.CopyResult(copy=copy_info(copy))


async def audit(view: OrgView, conn: Connection, req: po.AdminAudit) -> po.AuditPage:
    entries = await view.audit_log(after=req.after, limit=req.limit)
    return po.AuditPage(
        org=view.org_id,
        entries=[audit_info(e) for e in entries],
        next_after=entries[-1].audit_id if len(entries) == req.limit else None,
    )


async def feed(view: OrgView, conn: Connection, req: po.AdminFeed) -> Done:
    view.watch(conn, on=req.on)
    await view.record("feed_on" if req.on else "feed_off", f"connection:{conn.conn_id}")
    return Done()


async def _existing(view: OrgView, copy_id: int) -> OrgCopy:
    copy = await view.get_copy(copy_id)
    if copy is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such copy")
    return copy


def _filters(
    member: int | None, conv_ref: str | None, from_ts: int | None, to_ts: int | None
) -> str:
    parts = [
        f"{name}={value}"
        for name, value in (
            ("member", member),
            ("conv", conv_ref),
            ("from", from_ts),
            ("to", to_ts),
        )
        if value is not None
    ]
    return ",".join(parts) or "all"
