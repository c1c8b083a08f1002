"""Access and refresh tokens (A2): signatures, expiry, rotation, generations, MAC storage."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import msgspec
import pytest

from protocol import limits
from protocol.codec import encode_error
from protocol.errors import ErrorCode
from server.auth.errors import (
    AuthFailed,
    BadSignature,
    MalformedToken,
    RefreshReused,
    SessionExpired,
    SessionRevoked,
    TokenExpired,
    UnknownKey,
    UnknownSession,
)
from server.auth.keys import ServerKeys
from server.auth.tokens import (
    AccessTokens,
    RefreshTokens,
    check_generation,
    parse_refresh_token,
    refresh_mac,
)
from server.clock import ManualClock


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def keys() -> ServerKeys:
    return ServerKeys.ephemeral()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def access(keys: ServerKeys) -> AccessTokens:
    return AccessTokens(keys)


# --- access tokens --------------------------------------------------------------------------


def test_access_token_round_trip(
    access: AccessTokens, keys: ServerKeys, clock: ManualClock
) -> None:
    now = clock.now_ms()
    token = access.issue(user_id=42, device_id=7, generation=3, now_ms=now)
    claims = access.verify(token, clock.now_ms())
    assert claims.kid == keys.active_kid
    assert (claims.user_id, claims.device_id, claims.generation) == (42, 7, 3)
    assert claims.issued_at == now
    assert claims.expires_at == now + 15 * 60 * 1000
    assert claims.type == "access"


def test_access_token_is_compact_ascii_safe_in_a_msgpack_string(
    access: AccessTokens, keys: ServerKeys, clock: ManualClock
) -> None:
    token = access.issue(user_id=2**53 - 1, device_id=2**53 - 1, generation=9, now_ms=1)
    assert re.fullmatch(rf"v1\.{keys.active_kid}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{{86}}", token)
    assert len(token) < 200 < limits.MAX_TOKEN_CHARS
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(token), type=str) == token


def test_access_token_expires_after_its_ttl(access: AccessTokens, clock: ManualClock) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    clock.advance(15 * 60 - 0.001)
    assert access.verify(token, clock.now_ms()).user_id == 1
    clock.advance(0.001)
    with pytest.raises(TokenExpired) as caught:
        access.verify(token, clock.now_ms())
    assert caught.value.code == ErrorCode.TOKEN_EXPIRED
    assert not isinstance(caught.value, AuthFailed)  # the client refreshes instead


def test_access_token_ttl_is_configurable(keys: ServerKeys, clock: ManualClock) -> None:
    short = AccessTokens(keys, ttl_seconds=60)
    token = short.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    clock.advance(60)
    with pytest.raises(TokenExpired):
        short.verify(token, clock.now_ms())
    with pytest.raises(ValueError):
        AccessTokens(keys, ttl_seconds=0)


def test_tampered_payload_fails_the_signature(access: AccessTokens, clock: ManualClock) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    version, kid, payload, signature = token.split(".")
    fields = msgspec.msgpack.decode(unb64(payload))
    fields[1] = 2  # become user 2
    forged = ".".join([version, kid, b64(msgspec.msgpack.encode(fields)), signature])
    with pytest.raises(BadSignature) as caught:
        access.verify(forged, clock.now_ms())
    assert isinstance(caught.value, AuthFailed)
    assert caught.value.code == ErrorCode.AUTH_FAILED


def test_tampered_signature_fails(access: AccessTokens, clock: ManualClock) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    head, signature = token.rsplit(".", 1)
    raw = bytearray(unb64(signature))
    raw[0] ^= 1
    with pytest.raises(BadSignature):
        access.verify(f"{head}.{b64(bytes(raw))}", clock.now_ms())


def test_the_kid_is_signed_too(keys: ServerKeys, clock: ManualClock) -> None:
    access = AccessTokens(keys)
    old_kid = keys.active_kid
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    keys.rotate()
    relabelled = token.replace(f"v1.{old_kid}.", f"v1.{keys.active_kid}.", 1)
    with pytest.raises(BadSignature):
        access.verify(relabelled, clock.now_ms())


def test_a_forged_expired_token_is_reported_as_forged_not_expired(
    access: AccessTokens, clock: ManualClock
) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    head, signature = token.rsplit(".", 1)
    clock.advance(3600)
    forged = f"{head}.{signature[::-1]}"
    with pytest.raises(AuthFailed):
        access.verify(forged, clock.now_ms())


def test_unknown_kid_is_refused(access: AccessTokens, clock: ManualClock) -> None:
    stranger = AccessTokens(ServerKeys.ephemeral())
    token = stranger.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    with pytest.raises(UnknownKey) as caught:
        access.verify(token, clock.now_ms())
    assert isinstance(caught.value, AuthFailed)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "v1",
        "v1...",
        "v2.0123456789ab.AAAA." + "A" * 86,
        "v1.0123456789AB.AAAA." + "A" * 86,  # kids are lowercase hex
        "v1.0123456789ab.AA=A." + "A" * 86,
        "r1." + "A" * 22 + "." + "A" * 43,  # a refresh token where an access token belongs
        "v1.0123456789ab." + "A" * 2000 + "." + "A" * 86,
    ],
)
def test_malformed_access_tokens_are_refused(
    access: AccessTokens, clock: ManualClock, token: str
) -> None:
    with pytest.raises(AuthFailed):
        access.verify(token, clock.now_ms())


def test_non_canonical_signature_encoding_is_malformed(
    access: AccessTokens, clock: ManualClock
) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    head, signature = token.rsplit(".", 1)
    # 86 characters carry 516 bits for a 512-bit signature: flipping a spare low bit of the
    # last character decodes to the same bytes but is another spelling of the token.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert unb64(signature[:-1] + last) == unb64(signature)
    with pytest.raises(MalformedToken):
        access.verify(f"{head}.{signature[:-1]}{last}", clock.now_ms())


def test_rotation_keeps_old_tokens_valid(tmp_path: Path, clock: ManualClock) -> None:
    keys = ServerKeys.open(tmp_path)
    access = AccessTokens(keys)
    old_kid = keys.active_kid
    before = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    new_kid = keys.rotate()
    after = access.issue(user_id=1, device_id=2, generation=0, now_ms=clock.now_ms())
    assert access.verify(before, clock.now_ms()).kid == old_kid
    assert access.verify(after, clock.now_ms()).kid == new_kid
    # ... and across a restart, from the files alone.
    restarted = AccessTokens(ServerKeys.open(tmp_path))
    assert restarted.verify(before, clock.now_ms()).device_id == 1
    assert restarted.verify(after, clock.now_ms()).device_id == 2


def test_a2_generation_is_carried_and_logout_all_revokes_older_tokens(
    access: AccessTokens, clock: ManualClock
) -> None:
    token = access.issue(user_id=5, device_id=1, generation=4, now_ms=clock.now_ms())
    claims = access.verify(token, clock.now_ms())
    assert claims.generation == 4
    check_generation(claims.generation, current=4)
    with pytest.raises(SessionRevoked) as caught:
        check_generation(claims.generation, current=5)  # logout_all bumped it
    assert caught.value.code == ErrorCode.SESSION_REVOKED


def test_a2_error_replies_never_echo_the_token(access: AccessTokens, clock: ManualClock) -> None:
    token = access.issue(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    clock.advance(3600)
    with pytest.raises(TokenExpired) as caught:
        access.verify(token, clock.now_ms())
    frame = encode_error(caught.value, rid=1)
    assert token.encode() not in frame
    assert token.split(".")[3].encode() not in frame
    assert token not in str(caught.value)


# --- refresh tokens -------------------------------------------------------------------------


@pytest.fixture
def refresh(keys: ServerKeys) -> RefreshTokens:
    return RefreshTokens(keys.mac_key)


def test_refresh_mint_parse_and_mac(
    refresh: RefreshTokens, keys: ServerKeys, clock: ManualClock
) -> None:
    text, session = refresh.mint(user_id=9, device_id=3, generation=2, now_ms=clock.now_ms())
    assert re.fullmatch(r"r1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", text)
    parsed = parse_refresh_token(text)
    assert parsed.session_id == session.session_id
    assert len(parsed.secret) == 32
    assert (session.user_id, session.device_id, session.generation) == (9, 3, 2)
    assert session.expires_at == clock.now_ms() + 30 * 24 * 3600 * 1000
    # A2: only a keyed MAC of the secret is stored, never the secret or a plain hash of it.
    assert session.secret_mac == refresh_mac(keys.mac_key, parsed.secret)
    assert session.secret_mac == refresh.mac(parsed.secret)
    assert session.secret_mac != parsed.secret
    assert session.secret_mac != hashlib.sha256(parsed.secret).digest()
    assert parsed.secret not in msgspec.msgpack.encode(session)
    assert refresh_mac(ServerKeys.ephemeral().mac_key, parsed.secret) != session.secret_mac


def test_refresh_sessions_are_random(refresh: RefreshTokens, clock: ManualClock) -> None:
    minted = [refresh.mint(user_id=1, device_id=1, generation=0, now_ms=0) for _ in range(20)]
    assert len({session.session_id for _, session in minted}) == 20
    assert len({text for text, _ in minted}) == 20


def test_a2_parsed_refresh_token_repr_hides_the_secret(refresh: RefreshTokens) -> None:
    text, _ = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=0)
    parsed = parse_refresh_token(text)
    assert text.split(".")[2] not in repr(parsed)
    assert repr(parsed.secret) not in repr(parsed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "r1",
        "r1..",
        "r2." + "A" * 22 + "." + "A" * 43,
        "r1." + "A" * 21 + "." + "A" * 43,
        "r1." + "A" * 22 + "." + "A" * 42 + "=",
        "r1." + "A" * 22 + "." + "A" * 42 + "B",  # non-canonical: spare bits set
        "v1.0123456789ab.AAAA." + "A" * 86,
    ],
)
def test_malformed_refresh_tokens_are_refused(text: str) -> None:
    with pytest.raises(MalformedToken):
        parse_refresh_token(text)


def test_refresh_check_accepts_the_current_secret(
    refresh: RefreshTokens, clock: ManualClock
) -> None:
    text, session = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    checked = refresh.check(
        parse_refresh_token(text), session, now_ms=clock.now_ms(), current_generation=0
    )
    assert checked == session


def test_refresh_check_refuses_a_missing_session(
    refresh: RefreshTokens, clock: ManualClock
) -> None:
    text, _ = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    with pytest.raises(UnknownSession):
        refresh.check(parse_refresh_token(text), None, now_ms=0, current_generation=0)


def test_refresh_check_refuses_a_wrong_secret(refresh: RefreshTokens, clock: ManualClock) -> None:
    _, session = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    other_text, _ = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    forged = f"r1.{session.session_id}.{other_text.split('.')[2]}"
    with pytest.raises(RefreshReused) as caught:
        refresh.check(parse_refresh_token(forged), session, now_ms=0, current_generation=0)
    assert caught.value.code == ErrorCode.AUTH_FAILED


def test_refresh_renew_rotates_the_secret(refresh: RefreshTokens, clock: ManualClock) -> None:
    old_text, session = refresh.mint(user_id=4, device_id=2, generation=1, now_ms=clock.now_ms())
    clock.advance(3600)
    new_text, renewed = refresh.renew(session, now_ms=clock.now_ms())
    assert renewed.session_id == session.session_id
    assert (renewed.user_id, renewed.device_id, renewed.generation) == (4, 2, 1)
    assert renewed.secret_mac != session.secret_mac
    assert renewed.expires_at == clock.now_ms() + refresh.ttl_ms  # sliding
    now = clock.now_ms()
    assert refresh.check(parse_refresh_token(new_text), renewed, now_ms=now, current_generation=1)
    with pytest.raises(RefreshReused):  # the rotated-away secret is a reuse
        refresh.check(parse_refresh_token(old_text), renewed, now_ms=now, current_generation=1)


def test_a2_refresh_check_refuses_an_older_generation(
    refresh: RefreshTokens, clock: ManualClock
) -> None:
    text, session = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    with pytest.raises(SessionRevoked):
        refresh.check(parse_refresh_token(text), session, now_ms=0, current_generation=1)


def test_refresh_session_expires_after_30_days(refresh: RefreshTokens, clock: ManualClock) -> None:
    text, session = refresh.mint(user_id=1, device_id=1, generation=0, now_ms=clock.now_ms())
    parsed = parse_refresh_token(text)
    clock.advance(30 * 24 * 3600 - 1)
    refresh.check(parsed, session, now_ms=clock.now_ms(), current_generation=0)
    clock.advance(1)
    with pytest.raises(SessionExpired) as caught:
        refresh.check(parsed, session, now_ms=clock.now_ms(), current_generation=0)
    assert isinstance(caught.value, AuthFailed)  # log in again, not "refresh"


def test_refresh_ttl_is_configurable(keys: ServerKeys) -> None:
    short = RefreshTokens(keys.mac_key, ttl_seconds=10)
    _, session = short.mint(user_id=1, device_id=1, generation=0, now_ms=1000)
    assert session.expires_at == 11_000
