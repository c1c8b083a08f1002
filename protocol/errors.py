"""Error codes (in replies) and close codes (on the WebSocket), in documented ranges.

Every code says whose fault it was and whether a client should retry (house habit 4), so a
client acts on the number without parsing text.

Error code ranges (the ``code`` of an ``error`` reply):

* 1000-1999  the request is malformed or not understood: terminal, fix the client.
* 2000-2999  authentication and permission: terminal for this request.
* 3000-3999  the request is valid but conflicts with the current state: terminal.
* 4000-4999  transient: retry later (with the same client message id where there is one).

Close codes (WebSocket close frames) use the standard 1000-1011 and Rivet's 4000-4099:
4000-4049 are terminal (do not reconnect without changing something), 4050-4099 retryable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

Fault = Literal["client", "server"]


@dataclass(frozen=True, slots=True)
class CodeInfo:
    name: str
    retryable: bool
    fault: Fault
    meaning: str


class ErrorCode(IntEnum):
    # 1xxx: malformed or not understood
    MALFORMED = 1000
    UNKNOWN_OP = 1001
    INVALID_FIELD = 1002
    TOO_LARGE = 1003
    TOO_DEEP = 1004
    UNSUPPORTED_TYPE = 1005
    # 2xxx: authentication and permission
    NOT_AUTHENTICATED = 2000
    AUTH_FAILED = 2001
    TOKEN_EXPIRED = 2002
    CODE_INVALID = 2003
    CODE_ATTEMPTS_EXCEEDED = 2004
    FORBIDDEN = 2005
    NOT_FOUND = 2006
    BLOCKED = 2007
    MUTED = 2008
    SESSION_REVOKED = 2009
    # enterprise accounts (P5): real-person verification (O3) and one code per control (O1)
    VERIFICATION_REQUIRED = 2010
    ACCOUNT_DISABLED = 2011
    MESSAGES_FORBIDDEN = 2012
    FILES_FORBIDDEN = 2013
    CONTACTS_FORBIDDEN = 2014
    JOIN_ORGS_FORBIDDEN = 2015
    LOGIN_RESTRICTED = 2016
    ACCOUNT_FROZEN = 2017
    DING_FORBIDDEN = 2018
    LIVE_FORBIDDEN = 2019
    EXTERNAL_CHAT_FORBIDDEN = 2020
    # 3xxx: conflicts with the current state
    IDEMPOTENCY_CONFLICT = 3000
    ALREADY_MEMBER = 3001
    NOT_MEMBER = 3002
    MEMBER_LIMIT = 3003
    RECALL_WINDOW_PASSED = 3004
    ALREADY_HANDSHAKEN = 3005
    INVALID_STATE = 3006
    LIVE_IN_PROGRESS = 3007
    COHOST_LIMIT = 3008
    ORGANISATION_CONVERSATION = 3030
    #: P5: an enterprise account neither leaves nor is removed from its organisation.
    ENTERPRISE_ACCOUNT_BOUND = 3009
    #: M2: group capacity, an expansion paid from an organisation's package.
    PACKAGE_EXHAUSTED = 3020
    NOT_A_TIER = 3021
    # 4xxx: transient
    RATE_LIMITED = 4000
    OVERLOADED = 4001
    STORAGE_FULL = 4002
    INTERNAL = 4003
    UNAVAILABLE = 4004


ERROR_INFO: dict[ErrorCode, CodeInfo] = {
    ErrorCode.MALFORMED: CodeInfo(
        "malformed", False, "client", "The frame is not one valid MessagePack map."
    ),
    ErrorCode.UNKNOWN_OP: CodeInfo(
        "unknown_op", False, "client", "The op is not one this server knows."
    ),
    ErrorCode.INVALID_FIELD: CodeInfo(
        "invalid_field",
        False,
        "client",
        "A field is missing, of the wrong type or out of range; `path` names it.",
    ),
    ErrorCode.TOO_LARGE: CodeInfo(
        "too_large", False, "client", "A string, list or id exceeds its limit."
    ),
    ErrorCode.TOO_DEEP: CodeInfo("too_deep", False, "client", "The frame nests too deeply."),
    ErrorCode.UNSUPPORTED_TYPE: CodeInfo(
        "unsupported_type", False, "client", "MessagePack ext types are not accepted."
    ),
    ErrorCode.NOT_AUTHENTICATED: CodeInfo(
        "not_authenticated", False, "client", "This op needs an authenticated connection."
    ),
    ErrorCode.AUTH_FAILED: CodeInfo(
        "auth_failed", False, "client", "The token or credentials are not valid."
    ),
    ErrorCode.TOKEN_EXPIRED: CodeInfo(
        "token_expired", False, "client", "The access token expired: refresh it, then retry."
    ),
    ErrorCode.CODE_INVALID: CodeInfo(
        "code_invalid", False, "client", "The one-time code is wrong, used or expired."
    ),
    ErrorCode.CODE_ATTEMPTS_EXCEEDED: CodeInfo(
        "code_attempts_exceeded",
        False,
        "client",
        "Too many wrong codes: request a new code.",
    ),
    ErrorCode.FORBIDDEN: CodeInfo(
        "forbidden", False, "client", "The caller may not do this (role, mute, policy)."
    ),
    ErrorCode.NOT_FOUND: CodeInfo(
        "not_found",
        False,
        "client",
        "No such object visible to the caller. A conversation the caller is not in gives "
        "this same code, so its existence is never revealed.",
    ),
    ErrorCode.BLOCKED: CodeInfo(
        "blocked", False, "client", "The other user does not accept this from the caller."
    ),
    ErrorCode.MUTED: CodeInfo(
        "muted", False, "client", "The caller is muted in this group, or the group is muted."
    ),
    ErrorCode.SESSION_REVOKED: CodeInfo(
        "session_revoked", False, "client", "The session was revoked: log in again."
    ),
    ErrorCode.VERIFICATION_REQUIRED: CodeInfo(
        "verification_required",
        False,
        "client",
        "O3: an enterprise account without real-person verification may not communicate "
        "with people outside its organisation, and they may not communicate with it.",
    ),
    ErrorCode.ACCOUNT_DISABLED: CodeInfo(
        "account_disabled",
        False,
        "client",
        "The enterprise account was disabled, banned or cancelled by its organisation.",
    ),
    ErrorCode.MESSAGES_FORBIDDEN: CodeInfo(
        "messages_forbidden", False, "client", "O1: the organisation forbids this account messages."
    ),
    ErrorCode.FILES_FORBIDDEN: CodeInfo(
        "files_forbidden", False, "client", "O1: the organisation forbids this account files."
    ),
    ErrorCode.CONTACTS_FORBIDDEN: CodeInfo(
        "contacts_forbidden",
        False,
        "client",
        "O1: the organisation forbids this account adding contacts.",
    ),
    ErrorCode.JOIN_ORGS_FORBIDDEN: CodeInfo(
        "join_orgs_forbidden",
        False,
        "client",
        "O1: the organisation forbids this account joining other organisations.",
    ),
    ErrorCode.LOGIN_RESTRICTED: CodeInfo(
        "login_restricted", False, "client", "O1: the organisation restricted this account's login."
    ),
    ErrorCode.ACCOUNT_FROZEN: CodeInfo(
        "account_frozen", False, "client", "O1: the organisation froze this account."
    ),
    ErrorCode.DING_FORBIDDEN: CodeInfo(
        "ding_forbidden", False, "client", "O1: the organisation restricted DING for this account."
    ),
    ErrorCode.LIVE_FORBIDDEN: CodeInfo(
        "live_forbidden",
        False,
        "client",
        "O1: the organisation restricted live streams for this account.",
    ),
    ErrorCode.EXTERNAL_CHAT_FORBIDDEN: CodeInfo(
        "external_chat_forbidden",
        False,
        "client",
        "O1: the organisation restricted chat with people outside it for this account.",
    ),
    ErrorCode.IDEMPOTENCY_CONFLICT: CodeInfo(
        "idempotency_conflict",
        False,
        "client",
        "The client id was already used for a different request.",
    ),
    ErrorCode.ALREADY_MEMBER: CodeInfo(
        "already_member", False, "client", "The user is already a member."
    ),
    ErrorCode.NOT_MEMBER: CodeInfo(
        "not_member", False, "client", "The named user is not a member of this group."
    ),
    ErrorCode.MEMBER_LIMIT: CodeInfo(
        "member_limit", False, "client", "The group is at its member limit."
    ),
    ErrorCode.RECALL_WINDOW_PASSED: CodeInfo(
        "recall_window_passed", False, "client", "The recall window has passed."
    ),
    ErrorCode.ALREADY_HANDSHAKEN: CodeInfo(
        "already_authenticated", False, "client", "The connection is already authenticated."
    ),
    ErrorCode.INVALID_STATE: CodeInfo(
        "invalid_state",
        False,
        "client",
        "The request does not fit the object's current state (e.g. answering a contact "
        "request that does not exist).",
    ),
    ErrorCode.LIVE_IN_PROGRESS: CodeInfo(
        "live_in_progress",
        False,
        "client",
        "The group already has an active live stream (L1): join it, or end it first.",
    ),
    ErrorCode.COHOST_LIMIT: CodeInfo(
        "cohost_limit", False, "client", "The live stream has its maximum of co-hosts."
    ),
    ErrorCode.PACKAGE_EXHAUSTED: CodeInfo(
        "package_exhausted",
        False,
        "client",
        "M2: the organisation's group-expansion package has fewer units left than the tier "
        "costs; nothing was charged or changed. An admin tops it up (org.group_topup).",
    ),
    ErrorCode.NOT_A_TIER: CodeInfo(
        "not_a_tier",
        False,
        "client",
        "M2: the member limit asked for is not one of this server's expansion tiers (the "
        "message lists them).",
    ),
    ErrorCode.ENTERPRISE_ACCOUNT_BOUND: CodeInfo(
        "enterprise_account_bound",
        False,
        "client",
        "P5: an enterprise account belongs to its organisation for its whole life; it cannot "
        "leave or be removed. An admin cancels it instead (org.account.status cancelled).",
    ),
    ErrorCode.ORGANISATION_CONVERSATION: CodeInfo(
        "organisation_conversation",
        False,
        "client",
        "D2: the conversation is in the wrong domain for these people. Only an "
        "organisation's enterprise accounts take part in its conversations (`o:<org>:...`), "
        "and the single chat between two enterprise accounts of one organisation is "
        "`o:<org>:d:<low>:<high>`, never `d:<low>:<high>`.",
    ),
    ErrorCode.RATE_LIMITED: CodeInfo(
        "rate_limited", True, "client", "Too many requests: wait `retry_after` seconds (C2)."
    ),
    ErrorCode.OVERLOADED: CodeInfo(
        "overloaded", True, "server", "The server is shedding load: retry with backoff."
    ),
    ErrorCode.STORAGE_FULL: CodeInfo(
        "storage_full",
        True,
        "server",
        "The write did not land (disk full or store unavailable); nothing was stored.",
    ),
    ErrorCode.INTERNAL: CodeInfo(
        "internal", True, "server", "An unexpected server error; nothing was acknowledged."
    ),
    ErrorCode.UNAVAILABLE: CodeInfo(
        "unavailable", True, "server", "The server is shutting down: reconnect and retry."
    ),
}


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003  # text frames
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    PROTOCOL_VIOLATION = 4000
    HANDSHAKE_TIMEOUT = 4001
    UNSUPPORTED_VERSION = 4002
    AUTH_FAILED = 4003
    SESSION_REVOKED = 4004
    ACCOUNT_SUSPENDED = 4005
    TOO_MANY_ERRORS = 4006
    SLOW_CONSUMER = 4050
    FLOOD = 4051
    HEARTBEAT_TIMEOUT = 4052
    TOO_MANY_CONNECTIONS = 4053


CLOSE_INFO: dict[CloseCode, CodeInfo] = {
    CloseCode.NORMAL: CodeInfo("normal", False, "client", "The client asked to close."),
    CloseCode.GOING_AWAY: CodeInfo(
        "going_away", True, "server", "The server is shutting down: reconnect and resume."
    ),
    CloseCode.UNSUPPORTED_DATA: CodeInfo(
        "unsupported_data", False, "client", "A text frame: Rivet speaks binary frames only."
    ),
    CloseCode.MESSAGE_TOO_BIG: CodeInfo(
        "message_too_big", False, "client", "A frame larger than MAX_FRAME_BYTES."
    ),
    CloseCode.INTERNAL_ERROR: CodeInfo(
        "internal_error", True, "server", "The server failed; reconnect and resume."
    ),
    CloseCode.PROTOCOL_VIOLATION: CodeInfo(
        "protocol_violation",
        False,
        "client",
        "A frame before the handshake that is not a handshake op, or a broken handshake.",
    ),
    CloseCode.HANDSHAKE_TIMEOUT: CodeInfo(
        "handshake_timeout",
        False,
        "client",
        "The connection did not authenticate within the handshake deadline.",
    ),
    CloseCode.UNSUPPORTED_VERSION: CodeInfo(
        "unsupported_version", False, "client", "The hello named a protocol version we lack."
    ),
    CloseCode.AUTH_FAILED: CodeInfo(
        "auth_failed", False, "client", "Authentication failed during the handshake."
    ),
    CloseCode.SESSION_REVOKED: CodeInfo(
        "session_revoked", False, "client", "logout_all revoked this session: log in again."
    ),
    CloseCode.ACCOUNT_SUSPENDED: CodeInfo(
        "account_suspended", False, "client", "The account was suspended or frozen."
    ),
    CloseCode.TOO_MANY_ERRORS: CodeInfo(
        "too_many_errors",
        False,
        "client",
        "The connection sent too many malformed frames in a row.",
    ),
    CloseCode.SLOW_CONSUMER: CodeInfo(
        "slow_consumer",
        True,
        "client",
        "The client read too slowly and its send queue filled: reconnect and catch up with "
        "the sync token; nothing is lost.",
    ),
    CloseCode.FLOOD: CodeInfo(
        "flood", True, "client", "The client kept sending after being rate limited."
    ),
    CloseCode.HEARTBEAT_TIMEOUT: CodeInfo(
        "heartbeat_timeout", True, "client", "The client stopped answering pings."
    ),
    CloseCode.TOO_MANY_CONNECTIONS: CodeInfo(
        "too_many_connections",
        True,
        "client",
        "The user has too many open connections; close one first.",
    ),
}


class ProtocolError(Exception):
    """A request the server refuses, with the code a client acts on.

    Raised by the codec for frames that do not decode, and by the server for requests it
    refuses. ``path`` names the offending field when there is one.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str = "",
        *,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or ERROR_INFO[code].meaning)
        self.code = code
        self.message = message or ERROR_INFO[code].meaning
        self.path = path
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return ERROR_INFO[self.code].retryable
