"""Why a credential was refused, as exceptions the router turns into error replies.

Every class is a ``ProtocolError`` with a fixed code (house habit 4), so the router replies
with ``encode_error(exc, rid)`` and needs no mapping table. The client sees only the code's
generic meaning: ``reason`` is a short, fixed phrase for the server's log and never
contains the token, secret or code that was refused (A2).

Families, by what the client should do:

* ``AuthFailed`` (2001): the credential is not valid; log in again.
  ``MalformedToken``, ``UnknownKey``, ``BadSignature``, ``UnknownSession``,
  ``RefreshReused`` and ``SessionExpired`` narrow it down for logs and metrics.
* ``TokenExpired`` (2002): the access token was genuine but is past its expiry; refresh.
* ``SessionRevoked`` (2009): logout_all bumped the user's token generation (A2).
* ``CodeInvalid`` (2003), ``CodeAttemptsExceeded`` (2004): one-time login codes.
* ``CodeRequestThrottled`` (4000): too many code requests for one phone (C2); carries
  ``retry_after`` in seconds.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.errors import ErrorCode, ProtocolError


class AuthError(ProtocolError):
    """Base of every credential refusal. Subclasses fix ``error_code``."""

    error_code: ClassVar[ErrorCode] = ErrorCode.AUTH_FAILED
    default_reason: ClassVar[str] = "credentials refused"

    def __init__(self, reason: str = "", *, retry_after: float | None = None) -> None:
        # The client gets the code's generic meaning; the reason stays server-side.
        super().__init__(self.error_code, retry_after=retry_after)
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return f"{type(self).__name__}: {self.reason}"


class AuthFailed(AuthError):
    """The credential is not valid (terminal: log in again)."""

    error_code = ErrorCode.AUTH_FAILED
    default_reason = "authentication failed"


class MalformedToken(AuthFailed):
    default_reason = "token is malformed"


class UnknownKey(AuthFailed):
    """The token names a key id this server never had, or no longer keeps."""

    default_reason = "token names an unknown key id"


class BadSignature(AuthFailed):
    default_reason = "token signature does not verify"


class UnknownSession(AuthFailed):
    """The refresh token names a session that does not exist (logged out or never did)."""

    default_reason = "refresh session does not exist"


class RefreshReused(AuthFailed):
    """The refresh secret does not match the session's current one: an old, rotated-away
    secret was presented. The router should delete the session (theft indicator)."""

    default_reason = "refresh secret does not match the session"


class SessionExpired(AuthFailed):
    """The refresh session passed its expiry: the device must log in again."""

    default_reason = "refresh session expired"


class TokenExpired(AuthError):
    """A genuine access token past its expiry: refresh, then retry. Deliberately not an
    ``AuthFailed``: the client's reaction differs."""

    error_code = ErrorCode.TOKEN_EXPIRED
    default_reason = "access token expired"


class SessionRevoked(AuthError):
    """The credential predates the user's current token generation (A2 logout_all)."""

    error_code = ErrorCode.SESSION_REVOKED
    default_reason = "token generation was revoked"


class CodeInvalid(AuthError):
    """The one-time code is wrong, missing (never requested or already used) or expired.
    One code for all three so the reply tells an attacker nothing about the phone."""

    error_code = ErrorCode.CODE_INVALID
    default_reason = "login code invalid"


class CodeAttemptsExceeded(AuthError):
    error_code = ErrorCode.CODE_ATTEMPTS_EXCEEDED
    default_reason = "login code attempts exhausted"


class CodeRequestThrottled(AuthError):
    """C2: a phone asked for codes too often; ``retry_after`` says when it may ask again."""

    error_code = ErrorCode.RATE_LIMITED
    default_reason = "login code requests throttled"
