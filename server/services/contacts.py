"""Contacts (M5): add by phone, user id or QR token; accept or decline; remove; block.

Contacts are personal-domain data (D1 decision): no organisation ever sees them. Each
change writes both users' rows and an entry in each affected user's personal stream, in
one transaction of the personal store.
"""

from __future__ import annotations

import hashlib
import secrets

from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode, ProtocolError
from server import policy
from server.connection import Connection
from server.contact_changes import contact_event, contact_write
from server.context import Context
from server.services import enterprise
from server.services.render import fingerprint
from storage.records import ContactRow, ContactWrite, IdempotencyKey

QR_TOKEN_SECONDS = 10 * 60


def _qr_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _info(ctx: Context, owner: int, peer: int) -> replies.Contact:
    row = await ctx.stores.personal.get_contact(owner, peer)
    user = await ctx.stores.personal.get_user(peer)
    return replies.Contact(
        contact=replies.ContactInfo(
            user_id=peer,
            state=row.state if row is not None and row.state is not None else "none",
            display_name=user.display_name if user else "",
            note=row.note if row else "",
            updated_at=row.updated_at if row else 0,
        )
    )


async def add(ctx: Context, conn: Connection, req: rq.ContactsAdd) -> replies.Contact:
    caller = _user(conn)
    personal = ctx.stores.personal
    given = [x for x in (req.phone, req.user_id, req.qr_token) if x is not None]
    if len(given) != 1:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "give exactly one of phone, user_id, qr_token")
    now = ctx.clock.now_ms()
    target: int | None
    if req.phone is not None:
        user = await personal.get_user_by_phone(req.phone)
        target = user.user_id if user else None
    elif req.user_id is not None:
        target = req.user_id if policy.exists(await personal.get_user(req.user_id)) else None
    else:
        assert req.qr_token is not None
        target = await personal.resolve_qr_token(token_hash=_qr_hash(req.qr_token), now=now)
        if target is not None and not policy.exists(await personal.get_user(target)):
            target = None  # A1: a QR code of an account deleted since
    if target is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    if target == caller:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you cannot add yourself")
    await enterprise.check_contact(ctx, caller, target)  # O1, O3
    theirs = await personal.get_contact(target, caller)
    _refuse_if_blocked(theirs)
    mine = await personal.get_contact(caller, target)
    if mine is not None and mine.state == "accepted" and _is_accepted(theirs):
        # Contacts already. M5: a block and unblock since ended it on their side (their
        # row is gone, ours was left so as not to tell us of the block): then this is a
        # fresh request, not a silent "accepted" that reaches nobody.
        return await _info(ctx, caller, target)
    if mine is not None and mine.state == "blocked":
        # M5: a block is lifted only by ``contacts.block`` with ``blocked`` false. A request
        # would have overwritten the caller's blocked row and lifted it without a word.
        raise ProtocolError(
            ErrorCode.INVALID_STATE, "you blocked this user: unblock them before adding them"
        )
    if mine is not None and mine.state == "pending" and _request_stands(theirs):
        # They asked us first: adding them back accepts.
        writes = [
            contact_write(caller, target, "accepted", mine.note, now),
            contact_write(target, caller, "accepted", "", now),
        ]
    else:
        writes = [
            contact_write(caller, target, "requested", req.note, now),
            contact_write(target, caller, "pending", req.note, now),
        ]
    key = IdempotencyKey(
        sender=caller, client_id="c:" + req.cmid, fingerprint=fingerprint(str(target), req.note)
    )
    changes, duplicate = await personal.write_contacts(writes, now=now, idempotency=key)
    if not duplicate:
        _publish_changes(ctx, writes, [c.pstream for c in changes])
    return await _info(ctx, caller, target)


async def respond(ctx: Context, conn: Connection, req: rq.ContactsRespond) -> replies.Contact:
    """Accept or decline a request. M5: only a request that still stands can be accepted;
    the requester's row is written only while it still says ``requested``."""
    caller = _user(conn)
    personal = ctx.stores.personal
    mine = await personal.get_contact(caller, req.user)
    if mine is None or mine.state != "pending":
        raise ProtocolError(ErrorCode.INVALID_STATE, "no contact request from this user")
    theirs = await personal.get_contact(req.user, caller)
    now = ctx.clock.now_ms()
    if req.accept:
        # The requester may have blocked the caller since (``block`` writes only the
        # blocker's row, so the caller's ``pending`` row outlives the request), or blocked
        # and unblocked them: accepting must not overwrite the block, nor make contacts of
        # a user who withdrew. Refused; nothing is written.
        _refuse_if_blocked(theirs)
        if not _request_stands(theirs):
            raise ProtocolError(ErrorCode.INVALID_STATE, "this contact request was withdrawn")
        await enterprise.check_contact(ctx, caller, req.user)  # O1, O3
        writes = [
            contact_write(caller, req.user, "accepted", mine.note, now),
            contact_write(req.user, caller, "accepted", "", now),
        ]
    else:
        # Declining clears the caller's request; the requester learns it only while their
        # request still stands (a block of theirs stays as it is).
        writes = [contact_write(caller, req.user, None, "", now)]
        if _request_stands(theirs):
            writes.append(contact_write(req.user, caller, "declined", "", now))
    changes, _ = await personal.write_contacts(writes, now=now)
    _publish_changes(ctx, writes, [c.pstream for c in changes])
    return await _info(ctx, caller, req.user)


async def remove(ctx: Context, conn: Connection, req: rq.ContactsRemove) -> replies.Contact:
    caller = _user(conn)
    personal = ctx.stores.personal
    mine = await personal.get_contact(caller, req.user)
    if mine is None or mine.state == "blocked":
        raise ProtocolError(ErrorCode.INVALID_STATE, "not a contact")
    now = ctx.clock.now_ms()
    writes = [contact_write(caller, req.user, None, "", now)]
    theirs = await personal.get_contact(req.user, caller)
    if theirs is not None and theirs.state != "blocked":
        writes.append(contact_write(req.user, caller, None, "", now))
    changes, _ = await personal.write_contacts(writes, now=now)
    _publish_changes(ctx, writes, [c.pstream for c in changes])
    return await _info(ctx, caller, req.user)


async def block(ctx: Context, conn: Connection, req: rq.ContactsBlock) -> replies.Contact:
    """Blocking only changes the caller's row: the blocked user is not told (their sends
    and requests are refused with ``blocked``)."""
    caller = _user(conn)
    if req.user == caller:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you cannot block yourself")
    user = await ctx.stores.personal.get_user(req.user)
    # A1: a deleted account cannot be blocked (no such user), but a block of one can still
    # be lifted: the row is the caller's own.
    if user is None or (req.blocked and not policy.exists(user)):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    now = ctx.clock.now_ms()
    writes = [contact_write(caller, req.user, "blocked" if req.blocked else None, "", now)]
    changes, _ = await ctx.stores.personal.write_contacts(writes, now=now)
    _publish_changes(ctx, writes, [c.pstream for c in changes])
    return await _info(ctx, caller, req.user)


async def list_contacts(ctx: Context, conn: Connection, req: rq.ContactsList) -> replies.Contacts:
    caller = _user(conn)
    rows = await ctx.stores.personal.list_contacts(caller)
    users = {u.user_id: u for u in await ctx.stores.personal.get_users([r.peer for r in rows])}
    return replies.Contacts(
        contacts=[
            replies.ContactInfo(
                user_id=r.peer,
                state=r.state or "none",
                display_name=users[r.peer].display_name if r.peer in users else "",
                note=r.note,
                updated_at=r.updated_at,
            )
            for r in rows
        ]
    )


async def qr(ctx: Context, conn: Connection, req: rq.ContactsQr) -> replies.QrToken:
    """A short-lived token to show as a QR code; only its hash is stored."""
    caller = _user(conn)
    token = secrets.token_urlsafe(24)
    expires_at = ctx.clock.now_ms() + QR_TOKEN_SECONDS * 1000
    await ctx.stores.personal.put_qr_token(
        token_hash=_qr_hash(token), user_id=caller, expires_at=expires_at
    )
    return replies.QrToken(token=token, expires_at=expires_at)


def _refuse_if_blocked(their_row: ContactRow | None) -> None:
    """M5: the other user's row says they blocked the caller."""
    if their_row is not None and their_row.state == "blocked":
        raise ProtocolError(ErrorCode.BLOCKED, "this user does not accept requests from you")


def _is_accepted(row: ContactRow | None) -> bool:
    return row is not None and row.state == "accepted"


def _request_stands(requester_row: ContactRow | None) -> bool:
    """The requester's own row still says they asked (not withdrawn by a block since)."""
    return requester_row is not None and requester_row.state == "requested"


def _publish_changes(ctx: Context, writes: list[ContactWrite], pstreams: list[int]) -> None:
    for write, pstream in zip(writes, pstreams, strict=True):
        ctx.publish([write.row.owner], contact_event(write, pstream))


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id
