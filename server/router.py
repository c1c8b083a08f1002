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
from typing import Any

import msgspec
import trio

from protocol import codec
from protocol import requests as rq
from protocol.catalog import PRE_AUTH_OPS
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from server.connection import Connection
from server.context import Context
from server.ratelimit import KeyedLimiter
from server.services import contacts, groups, messages, presence, session, settings, sync
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
}

#: Store errors the client can act on, as protocol errors.
_STORE_ERRORS: dict[type[store_errors.StoreError], ErrorCode] = {
    store_errors.IdempotencyConflict: ErrorCode.IDEMPOTENCY_CONFLICT,
    store_errors.ConversationMissing: ErrorCode.NOT_FOUND,
    store_errors.NotAMember: ErrorCode.NOT_FOUND,
    store_errors.AlreadyExists: ErrorCode.INVALID_STATE,
    store_errors.StorageFull: ErrorCode.STORAGE_FULL,
    store_errors.StoreClosed: ErrorCode.UNAVAILABLE,
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
        self._request_limiter = KeyedLimiter(config.request_rate_per_second, config.request_burst)
        self.errors_by_code: dict[int, int] = {}
        self.requests = 0

    async def handle_frame(self, conn: Connection, frame: bytes) -> None:
        """Answer one frame with exactly one reply (or close the connection)."""
        self.requests += 1
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
        if not self._admit(conn, request):
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
        conn.send_nowait(codec.encode_ok(request.rid, result))

    def _admit(self, conn: Connection, request: rq.Request) -> bool:
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
        now = trio.current_time()
        wait = self._request_limiter.take(conn.conn_id, now)
        if wait == 0.0 and isinstance(request, rq.MsgSend) and conn.user_id is not None:
            wait = self.ctx.send_limiter.take(conn.user_id, now)
        if wait > 0.0:
            error = ProtocolError(ErrorCode.RATE_LIMITED, retry_after=round(wait, 3))
            self._reply_error(conn, error, request.rid)
            return False
        return True

    def _reply_error(self, conn: Connection, error: ProtocolError, rid: int | None) -> None:
        code = int(error.code)
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        conn.send_nowait(codec.encode_error(error, rid))

    def forget(self, conn: Connection) -> None:
        """Drop per-connection state when a connection ends."""
        self._request_limiter.drop(conn.conn_id)


def _store_message(error: store_errors.StoreError, code: ErrorCode) -> str:
    if code is ErrorCode.NOT_FOUND:
        # Never reveal more than "not found" about a conversation (same as not existing).
        return "no such conversation"
    return str(error) or code.name.lower()
