"""Access tokens (Ed25519-signed, short-lived) and refresh tokens (random, MAC-stored).

Access token, ASCII, safe in a MessagePack string::

    v1.<kid>.<b64url payload>.<b64url signature>

The payload is a MessagePack array ``["access", user_id, device_id, generation, issued_at,
expires_at]`` (times in ms). The signature is Ed25519 over the ASCII text ``v1.<kid>.<b64url
payload>``, so the version and the kid are signed too. Base64url is unpadded and must be
canonical. An access token is checked without any store: the router then compares
``claims.generation`` with the user's ``token_generation`` (``check_generation``) so that
logout_all revokes every older token at once (A2).

Refresh token::

    r1.<session_id>.<b64url 32-byte secret>

The session id is random (16 bytes, base64url). The store keeps only
``HMAC-SHA256(mac_key, secret)`` as ``RefreshSession.secret_mac`` (A2: a stolen database
yields no usable refresh token). Each use rotates the secret (``RefreshTokens.renew``); a
secret that no longer matches is a reuse and fails with ``RefreshReused``.

Everything here is pure and synchronous: the caller passes ``now_ms`` from its ``Clock``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature

from protocol import limits
from server.auth.errors import (
    BadSignature,
    MalformedToken,
    RefreshReused,
    SessionExpired,
    SessionRevoked,
    TokenExpired,
    UnknownKey,
    UnknownSession,
)
from server.auth.keys import KID_PATTERN, ServerKeys
from storage.records import RefreshSession

ACCESS_VERSION: Final = "v1"
REFRESH_VERSION: Final = "r1"
DEFAULT_ACCESS_TTL_SECONDS: Final = 15 * 60
DEFAULT_REFRESH_TTL_SECONDS: Final = 30 * 24 * 3600
REFRESH_SECRET_BYTES: Final = 32
SESSION_ID_BYTES: Final = 16

_B64 = r"[A-Za-z0-9_-]"
# An Ed25519 signature is 64 bytes: 86 unpadded base64url characters.
_ACCESS_TOKEN = re.compile(rf"v1\.({KID_PATTERN})\.({_B64}{{1,512}})\.({_B64}{{86}})")
# 16 bytes -> 22 characters, 32 bytes -> 43 characters.
_REFRESH_TOKEN = re.compile(rf"r1\.({_B64}{{22}})\.({_B64}{{43}})")

_Count = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_SAFE_INT)]
_Id = Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_SAFE_INT)]


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified access token says. Times are ms since the epoch."""

    kid: str
    user_id: int
    device_id: int
    #: The user's token generation when the token was issued (A2).
    generation: int
    issued_at: int
    expires_at: int
    type: Literal["access"] = "access"


class _Payload(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    typ: Literal["access"]
    uid: _Id
    did: _Id
    gen: _Count
    iat: _Count
    exp: _Count


_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder = msgspec.msgpack.Decoder(_Payload)


class AccessTokens:
    """Issues and verifies access tokens with a ``ServerKeys`` set."""

    def __init__(
        self, keys: ServerKeys, *, ttl_seconds: float = DEFAULT_ACCESS_TTL_SECONDS
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._keys = keys
        self._ttl_ms = int(ttl_seconds * 1000)

    @property
    def ttl_ms(self) -> int:
        return self._ttl_ms

    def issue(self, *, user_id: int, device_id: int, generation: int, now_ms: int) -> str:
        """A token for this user and device, signed with the active key, valid from
        ``now_ms`` for the configured lifetime."""
        payload = _Payload(
            typ="access",
            uid=user_id,
            did=device_id,
            gen=generation,
            iat=now_ms,
            exp=now_ms + self._ttl_ms,
        )
        payload_text = _b64encode(_payload_encoder.encode(payload))
        signed = f"{ACCESS_VERSION}.{self._keys.active_kid}.{payload_text}"
        return f"{signed}.{_b64encode(self._keys.sign(signed.encode('ascii')))}"

    def verify(self, token: str, now_ms: int) -> AccessClaims:
        """The claims of a genuine, unexpired token.

        Raises ``MalformedToken``, ``UnknownKey`` or ``BadSignature`` (all ``AuthFailed``)
        when the token is not one this server issued, and ``TokenExpired`` when it is but
        ``now_ms >= expires_at``. Expiry is checked after the signature, so a forged token
        is never reported as merely expired. The generation is not checked here: see
        ``check_generation``.
        """
        if len(token) > limits.MAX_TOKEN_CHARS:
            raise MalformedToken("token too long")
        match = _ACCESS_TOKEN.fullmatch(token)
        if match is None:
            if not token.startswith(f"{ACCESS_VERSION}."):
                raise MalformedToken("not a v1 access token")
            raise MalformedToken()
        kid, payload_text, signature_text = match.groups()
        public_key = self._keys.public_key(kid)
        if public_key is None:
            raise UnknownKey()
        try:
            signature = _b64decode(signature_text)
        except ValueError:
            raise MalformedToken("signature is not canonical base64url") from None
        signed = token[: match.start(3) - 1].encode("ascii")
        try:
            public_key.verify(signature, signed)
        except InvalidSignature:
            raise BadSignature() from None
        try:
            payload = _payload_decoder.decode(_b64decode(payload_text))
        except (ValueError, msgspec.DecodeError):
            # Signed by us yet unreadable: a token type or version this build does not know.
            raise MalformedToken("payload does not decode") from None
        if now_ms >= payload.exp:
            raise TokenExpired()
        return AccessClaims(
            kid=kid,
            user_id=payload.uid,
            device_id=payload.did,
            generation=payload.gen,
            issued_at=payload.iat,
            expires_at=payload.exp,
        )


def check_generation(generation: int, *, current: int) -> None:
    """A2: a token or refresh session of any generation but the user's current one was
    revoked by logout_all. Raises ``SessionRevoked``."""
    if generation != current:
        raise SessionRevoked()


# --- refresh tokens -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A parsed refresh token. The secret is left out of the repr so it never reaches a log."""

    session_id: str
    secret: bytes = field(repr=False)


def parse_refresh_token(token: str) -> RefreshToken:
    """Split ``r1.<session_id>.<secret>``; ``MalformedToken`` if it is not one."""
    match = _REFRESH_TOKEN.fullmatch(token) if len(token) <= limits.MAX_TOKEN_CHARS else None
    if match is None:
        raise MalformedToken("not an r1 refresh token")
    session_id, secret_text = match.groups()
    try:
        _b64decode(session_id)
        secret = _b64decode(secret_text)
    except ValueError:
        raise MalformedToken("refresh token is not canonical base64url") from None
    return RefreshToken(session_id=session_id, secret=secret)


def refresh_mac(mac_key: bytes, secret: bytes) -> bytes:
    """HMAC-SHA256 of a refresh secret: what the store keeps instead of the secret (A2)."""
    return hmac.new(mac_key, secret, hashlib.sha256).digest()


class RefreshTokens:
    """Mints, renews and checks refresh tokens with the server's MAC key.

    The router's refresh flow::

        parsed = parse_refresh_token(text)
        session = await personal.get_refresh_session(parsed.session_id)
        session = refresh.check(parsed, session, now_ms=now, current_generation=user_gen)
        text, renewed = refresh.renew(session, now_ms=now)
        if not await personal.rotate_refresh_session(session.session_id,
                old_mac=session.secret_mac, new_mac=renewed.secret_mac,
                expires_at=renewed.expires_at):
            raise RefreshReused()   # a concurrent use of the same secret won the race
    """

    def __init__(self, mac_key: bytes, *, ttl_seconds: float = DEFAULT_REFRESH_TTL_SECONDS) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._mac_key = mac_key
        self._ttl_ms = int(ttl_seconds * 1000)

    @property
    def ttl_ms(self) -> int:
        return self._ttl_ms

    def mac(self, secret: bytes) -> bytes:
        return refresh_mac(self._mac_key, secret)

    def mint(
        self, *, user_id: int, device_id: int, generation: int, now_ms: int
    ) -> tuple[str, RefreshSession]:
        """A new session: the token text for the client and the ``RefreshSession`` to store
        (``put_refresh_session``). The text is returned once and kept nowhere."""
        session_id = _b64encode(secrets.token_bytes(SESSION_ID_BYTES))
        return self._token(
            session_id=session_id,
            user_id=user_id,
            device_id=device_id,
            generation=generation,
            now_ms=now_ms,
        )

    def renew(self, session: RefreshSession, *, now_ms: int) -> tuple[str, RefreshSession]:
        """The same session with a fresh secret and expiry (sliding: ``now_ms`` + lifetime),
        to store with ``rotate_refresh_session`` so the presented secret stops working."""
        return self._token(
            session_id=session.session_id,
            user_id=session.user_id,
            device_id=session.device_id,
            generation=session.generation,
            now_ms=now_ms,
        )

    def check(
        self,
        token: RefreshToken,
        session: RefreshSession | None,
        *,
        now_ms: int,
        current_generation: int,
    ) -> RefreshSession:
        """Return ``session`` if ``token`` may use it.

        ``UnknownSession`` if there is no session; ``RefreshReused`` if the secret does not
        match (compared in constant time); ``SessionRevoked`` if the session's generation is
        not the user's current one (A2); ``SessionExpired`` if ``now_ms >= expires_at``. The
        secret is checked first, so only its holder learns anything about the session.
        """
        if session is None or session.session_id != token.session_id:
            raise UnknownSession()
        if not hmac.compare_digest(self.mac(token.secret), session.secret_mac):
            raise RefreshReused()
        check_generation(session.generation, current=current_generation)
        if now_ms >= session.expires_at:
            raise SessionExpired()
        return session

    def _token(
        self, *, session_id: str, user_id: int, device_id: int, generation: int, now_ms: int
    ) -> tuple[str, RefreshSession]:
        secret = secrets.token_bytes(REFRESH_SECRET_BYTES)
        session = RefreshSession(
            session_id=session_id,
            user_id=user_id,
            device_id=device_id,
            secret_mac=self.mac(secret),
            generation=generation,
            expires_at=now_ms + self._ttl_ms,
        )
        return f"{REFRESH_VERSION}.{session_id}.{_b64encode(secret)}", session


# --- base64url ------------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict unpadded base64url: a text that is not the canonical encoding of its bytes
    (stray trailing bits) raises ``ValueError``, so a token has exactly one spelling."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64url") from None
    if _b64encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data
