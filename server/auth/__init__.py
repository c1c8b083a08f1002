"""Credentials (A2): server keys, access and refresh tokens, login codes, passwords.

Pure, synchronous building blocks; the router owns the flows (who may log in, when a
session is revoked) and the stores keep only MACs and hashes, never a secret:

* ``keys``: ``ServerKeys``, the Ed25519 signing key set and the MAC key in
  ``<data_dir>/keys/`` (0700/0600; loose permissions refuse to start).
* ``tokens``: ``AccessTokens`` (``v1.<kid>.<payload>.<sig>``), ``RefreshTokens``
  (``r1.<session>.<secret>``), ``check_generation`` (logout_all).
* ``codes``: ``LoginCodes``, ``raise_for_outcome`` and the C2 ``CodeRequestThrottle``.
* ``passwords``: Argon2id ``hash_password`` / ``verify_password`` / ``needs_rehash``.
* ``errors``: the refusals, each a ``ProtocolError`` with its reply code.
"""

from server.auth.codes import (
    CodeRequestThrottle,
    IssuedCode,
    LoginCodes,
    code_mac,
    generate_code,
    raise_for_outcome,
)
from server.auth.errors import (
    AuthError,
    AuthFailed,
    BadSignature,
    CodeAttemptsExceeded,
    CodeInvalid,
    CodeRequestThrottled,
    MalformedToken,
    RefreshReused,
    SessionExpired,
    SessionRevoked,
    TokenExpired,
    UnknownKey,
    UnknownSession,
)
from server.auth.keys import InsecureKeyStore, KeyStoreError, ServerKeys
from server.auth.passwords import hash_password, needs_rehash, verify_password
from server.auth.tokens import (
    AccessClaims,
    AccessTokens,
    RefreshToken,
    RefreshTokens,
    check_generation,
    parse_refresh_token,
    refresh_mac,
)

__all__ = [
    "AccessClaims",
    "AccessTokens",
    "AuthError",
    "AuthFailed",
    "BadSignature",
    "CodeAttemptsExceeded",
    "CodeInvalid",
    "CodeRequestThrottle",
    "CodeRequestThrottled",
    "InsecureKeyStore",
    "IssuedCode",
    "KeyStoreError",
    "LoginCodes",
    "MalformedToken",
    "RefreshReused",
    "RefreshToken",
    "RefreshTokens",
    "ServerKeys",
    "SessionExpired",
    "SessionRevoked",
    "TokenExpired",
    "UnknownKey",
    "UnknownSession",
    "check_generation",
    "code_mac",
    "generate_code",
    "hash_password",
    "needs_rehash",
    "parse_refresh_token",
    "raise_for_outcome",
    "refresh_mac",
    "verify_password",
]
