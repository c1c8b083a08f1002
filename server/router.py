"""The router: every request passes here, from decoded frame to reply.

For each frame it: decodes (``protocol.codec``), refuses anything but handshake ops before
authentication, applies the per-connection and per-user rate limits (C2), dispatches to
the service for the op, and turns every outcome into exactly one reply. Services ask
``server.policy`` for every decision; nothing reaches a store except through a service the
router called (D5).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec
import trio

from protocol import account as pa
from protocol import codec
from protocol import ding as pd
from protocol import enterprise as pe
from protocol import group_capacity as pg
from protocol import live as pl
from protocol import moderation as pm
from protocol import orgs as po
from protocol import requests as rq
from protocol.catalog import PRE_AUTH_OPS
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from server import policy
from server.connection import Connection
from server.context import Context
from server.metrics import METRICS
from server.org_view import OrgView
from server.services import (
    account,
    admin,
    contacts,
    groups,
    messages,
    orgs,
    presence,
    session,
    settings,
    sync,
)
from server.services import ding as ding_ops
from server.services import enterprise as enterprise_ops
from server.services import group_capacity as capacity_ops
from server.services import live as live_ops
from server.services import moderation as moderation_ops
from server.throttle import Refusal, Throttle
from storage import errors as store_errors

log = logging.getLogger(__name__)

Handler = Callable[[Context, Connection, Any], Awaitable[msgspec.Struct]]

HANDLERS: dict[type[rq.Request], Handler] = {
    rq.Hello: session.hello,
    rq.Auth: session.auth,
    rq.LoginRequestCode: session.request_code,
    rq.LoginVerify: session.verify_code,
    rq.TokenRefresh: session.refresh,
    rq.Ping: session.ping,
    rq.LogoutAll: session.logout_all,
    rq.DevicesList: session.devices,
    rq.ProfileSet: session.set_profile,
    rq.UsersGet: session.users,
    rq.MsgSend: messages.send,
    rq.MsgRecall: messages.recall,
    rq.MsgHistory: messages.history,
    rq.Sync: sync.sync,
    rq.Ack: sync.ack,
    rq.Read: messages.read,
    rq.ReceiptCounts: messages.receipt_counts,
    rq.ReceiptMembers: messages.receipt_members,
    rq.DirectOpen: messages.open_direct,
    rq.GroupCreate: groups.create,
    rq.GroupAdd: groups.add,
    rq.GroupRemove: groups.remove,
    rq.GroupLeave: groups.leave,
    rq.GroupRename: groups.rename,
    rq.GroupSetRole: groups.set_role,
    rq.GroupTransfer: groups.transfer,
    rq.GroupMuteMember: groups.mute_member,
    rq.GroupMuteAll: groups.mute_all,
    rq.GroupSetHistory: groups.set_history,
    rq.GroupInfo: groups.info,
    rq.GroupMembers: groups.members,
    rq.ContactsAdd: contacts.add,
    rq.ContactsRespond: contacts.respond,
    rq.ContactsRemove: contacts.remove,
    rq.ContactsBlock: contacts.block,
    rq.ContactsList: contacts.list_contacts,
    rq.ContactsQr: contacts.qr,
    rq.PresenceSubscribe: presence.subscribe,
    rq.Typing: presence.typing,
    rq.SettingsSet: settings.set_notifications,
    rq.ConvMute: settings.mute_conversation,
    pd.DingSend: ding_ops.send,
    pd.DingCancel: ding_ops.cancel,
    pd.DingConfirm: ding_ops.confirm,
    pd.DingRead: ding_ops.read,
    pd.DingRedding: ding_ops.redding,
    pd.DingGet: ding_ops.get,
    pd.DingListSent: ding_ops.list_sent,
    pd.DingListReceived: ding_ops.list_received,
    pd.OrgDingTopup: orgs.ding_topup,
    pd.OrgDingQuota: orgs.ding_quota,
    pl.LiveStart: live_ops.start,
    pl.LiveLink: live_ops.link,
    pl.LiveActive: live_ops.active,
    pl.LiveJoin: live_ops.join,
    pl.LiveLeave: live_ops.leave,
    pl.LiveViewers: live_ops.viewers,
    pl.LiveInvite: live_ops.invite,
    pl.LiveRaiseHand: live_ops.raise_hand,
    pl.LiveAnswerHand: live_ops.answer_hand,
    pl.LiveRemove: live_ops.remove,
    pl.LiveSignal: live_ops.signal,
    pl.LiveLike: live_ops.like,
    pl.LiveEnd: live_ops.end,
    pl.LiveResume: live_ops.resume,
    pm.Report: moderation_ops.report,
    po.OrgCreate: orgs.create,
    po.OrgGet: orgs.get,
    po.OrgMine: orgs.mine,
    po.OrgInvite: orgs.invite,
    po.OrgApply: orgs.apply,
    po.OrgReview: orgs.review,
    po.OrgAnswer: orgs.answer,
    po.OrgRequests: orgs.requests,
    po.OrgLeave: orgs.leave,
    po.OrgRemove: orgs.remove,
    po.OrgMembers: orgs.members,
    po.OrgSetAdmin: orgs.set_admin,
    po.OrgDissolve: orgs.dissolve,
    po.OrgDissolveConfirm: orgs.confirm_dissolve,
    pa.AccountDelete: account.delete,
    po.ConsentSet: orgs.set_consent,
    po.ConsentList: orgs.list_consents,
    pe.OrgAccountCreate: enterprise_ops.create_account,
    pe.LoginEnterprise: enterprise_ops.login,
    pe.OrgAccountStatus: enterprise_ops.set_status,
    pe.OrgAccountLogins: enterprise_ops.logins,
    pe.OrgAccountVerifyPerson: enterprise_ops.verify_person,
    pe.EnterpriseUnverifySelf: enterprise_ops.unverify_self,
    pe.OrgAccountControls: enterprise_ops.set_controls,
    pe.OrgAccountPhone: enterprise_ops.set_phone,
    pg.GroupExpand: capacity_ops.expand,
    pg.OrgGroupTopup: capacity_ops.topup,
    pg.OrgGroupPackage: capacity_ops.package,
}

AdminHandler = Callable[[OrgView, Connection, Any], Awaitable[msgspec.Struct]]

#: D5: every admin path, with the permission it needs. The router hands each one an
#: ``OrgView`` made by the policy module, never the context or a store.
ADMIN_HANDLERS: dict[type[rq.Request], tuple[AdminHandler, str]] = {
    po.AdminSearch: (admin.search, "search"),
    po.AdminExport: (admin.export, "export"),
    po.AdminCounts: (admin.counts, "audit"),
    po.AdminHide: (admin.hide, "moderate"),
    po.AdminRecall: (admin.recall, "moderate"),
    po.AdminAudit: (admin.audit, "audit"),
    po.AdminFeed: (admin.feed, "audit"),
}


def _admin_route(handler: AdminHandler, permission: str) -> Handler:
    async def route(ctx: Context, conn: Connection, request: Any) -> msgspec.Struct:
        assert conn.user_id is not None
        org = await ctx.stores.orgs.get_org(request.org)
        member = await ctx.stores.orgs.get_member(request.org, conn.user_id)
        if org is None or org.dissolving_at is not None:
            member = None  # O4: a dissolving organisation is gone for every admin path
        view = policy.admin_view(
            member,
            permission,
            store=ctx.stores.orgs,
            clock=ctx.clock,
            feeds=ctx.org_feeds,
            recall_own=partial(messages.recall_for_organisation, ctx),
        )
        return await handler(view, conn, request)

    return route


HANDLERS.update({op: _admin_route(h, p) for op, (h, p) in ADMIN_HANDLERS.items()})

#: Store errors the client can act on, as protocol errors.
_STORE_ERRORS: dict[type[store_errors.StoreError], ErrorCode] = {
    store_errors.IdempotencyConflict: ErrorCode.IDEMPOTENCY_CONFLICT,
    store_errors.ConversationMissing: ErrorCode.NOT_FOUND,
    store_errors.NotAMember: ErrorCode.NOT_FOUND,
    store_errors.AlreadyExists: ErrorCode.INVALID_STATE,
    store_errors.StorageFull: ErrorCode.STORAGE_FULL,
    store_errors.StoreClosed: ErrorCode.UNAVAILABLE,
    # The writer died (a bug): retryable; a resend of a write whose outcome is unknown is
    # answered by its idempotency key once the server is back.
    store_errors.StoreUnavailable: ErrorCode.UNAVAILABLE,
}

#: Consecutive undecodable frames after which a connection is closed (4006).
MAX_BAD_FRAMES = 20
#: Refused tokens on one connection after which it is closed (4003). Wrong one-time codes
#: have their own limit per code (CODE_ATTEMPTS_EXCEEDED).
MAX_AUTH_FAILURES = 3
_AUTH_FAILURES = frozenset(
    {ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED, ErrorCode.SESSION_REVOKED}
)


class Router:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        config = ctx.config
        self.throttle = Throttle(config, message_limiter=ctx.send_limiter)
        self.errors_by_code: dict[int, int] = {}
        self.requests = 0

    async def handle_frame(self, conn: Connection, frame: bytes) -> None:
        """Answer one frame with exactly one reply (or close the connection)."""
        self.requests += 1
        METRICS.requests.inc()
        # C2: every frame is charged before it is decoded (empty and garbage frames too).
        now = trio.current_time()  # one reading for both charges of this frame
        refusal = self.throttle.admit_frame(conn.conn_id, conn.user_id, now)
        if refusal is not None:
            self._refuse(conn, refusal, codec.request_id_of(frame))
            return
        try:
            request = codec.decode_request(frame)
        except ProtocolError as error:
            conn.bad_frames += 1
            self._reply_error(conn, error, codec.request_id_of(frame))
            if conn.bad_frames >= MAX_BAD_FRAMES:
                conn.close_soon(CloseCode.TOO_MANY_ERRORS, "too many malformed frames")
            elif not conn.hello_done:
                conn.close_soon(CloseCode.PROTOCOL_VIOLATION, "the first frame must be hello")
            return
        conn.bad_frames = 0
        if not self._admit(conn, request, now):
            return
        try:
            result = await HANDLERS[type(request)](self.ctx, conn, request)
        except ProtocolError as error:
            self._reply_error(conn, error, request.rid)
            if not conn.authenticated and error.code in _AUTH_FAILURES:
                conn.auth_failures += 1
                if conn.auth_failures >= MAX_AUTH_FAILURES:
                    conn.close_soon(CloseCode.AUTH_FAILED, "too many failed authentications")
            return
        except store_errors.StoreError as error:
            code = _STORE_ERRORS.get(type(error), ErrorCode.INTERNAL)
            self._reply_error(conn, ProtocolError(code, _store_message(error, code)), request.rid)
            return
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("request failed", extra={"op": type(request).__name__})
            self._reply_error(conn, ProtocolError(ErrorCode.INTERNAL), request.rid)
            return
        conn.reply_nowait(codec.encode_ok(request.rid, result))

    def _admit(self, conn: Connection, request: rq.Request, now: float) -> bool:
        """Handshake order and rate limits (C2)."""
        if not conn.hello_done and not isinstance(request, rq.Hello):
            self._reply_error(
                conn, ProtocolError(ErrorCode.NOT_AUTHENTICATED, "send hello first"), request.rid
            )
            conn.close_soon(CloseCode.PROTOCOL_VIOLATION, "the first frame must be hello")
            return False
        if not conn.authenticated and type(request) not in PRE_AUTH_OPS:
            self._reply_error(conn, ProtocolError(ErrorCode.NOT_AUTHENTICATED), request.rid)
            conn.close_soon(CloseCode.PROTOCOL_VIOLATION, "authenticate first")
            return False
        refusal = self.throttle.admit_op(conn.conn_id, conn.user_id, _op_name(request), now)
        if refusal is not None:
            self._refuse(conn, refusal, request.rid)
            return False
        return True

    def _refuse(self, conn: Connection, refusal: Refusal, rid: int | None) -> None:
        """A frame over budget: ``rate_limited``, and the flood close once strikes run out."""
        METRICS.rate_limited.inc(refusal.budget)
        error = ProtocolError(ErrorCode.RATE_LIMITED, retry_after=refusal.retry_after)
        self._reply_error(conn, error, rid)
        if refusal.flood:
            conn.close_soon(CloseCode.FLOOD, "kept sending while rate limited")

    def _reply_error(self, conn: Connection, error: ProtocolError, rid: int | None) -> None:
        code = int(error.code)
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        METRICS.errors.inc(code)
        conn.reply_nowait(codec.encode_error(error, rid))

    def forget(self, conn: Connection) -> None:
        """Drop per-connection state when a connection ends."""
        self.throttle.forget(conn.conn_id)


def _op_name(request: rq.Request) -> str:
    tag = type(request).__struct_config__.tag
    return tag if isinstance(tag, str) else ""


def _store_message(error: store_errors.StoreError, code: ErrorCode) -> str:
    if code is ErrorCode.NOT_FOUND:
        # Never reveal more than "not found" about a conversation (same as not existing).
        return "no such conversation"
    return str(error) or code.name.lower()
