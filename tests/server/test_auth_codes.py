"""One-time login codes (A2) and the per-phone request throttle (C2)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from protocol.codec import encode_error
from protocol.errors import ErrorCode
from server.auth.codes import (
    CodeRequestThrottle,
    LoginCodes,
    code_mac,
    generate_code,
    raise_for_outcome,
)
from server.auth.errors import CodeAttemptsExceeded, CodeInvalid, CodeRequestThrottled
from server.clock import ManualClock

KEY = bytes(range(32))
ALICE = "+8613800000001"
BOB = "+8613800000002"


def test_codes_are_six_random_digits() -> None:
    codes = [generate_code() for _ in range(200)]
    assert all(len(code) == 6 and code.isdigit() for code in codes)
    assert len(set(codes)) > 150  # a broken generator repeats itself


def test_a2_code_mac_is_keyed_hmac_of_phone_and_code() -> None:
    mac = code_mac(KEY, phone=ALICE, code="123456")
    assert mac == hmac.new(KEY, b"+8613800000001:123456", hashlib.sha256).digest()
    assert len(mac) == 32


def test_a2_code_mac_never_equals_the_code_nor_a_plain_hash() -> None:
    mac = code_mac(KEY, phone=ALICE, code="123456")
    assert mac != b"123456"
    assert b"123456" not in mac
    assert mac != hashlib.sha256(b"+8613800000001:123456").digest()
    assert mac != hashlib.sha256(b"123456").digest()


def test_a2_code_mac_differs_per_phone_and_per_key() -> None:
    assert code_mac(KEY, phone=ALICE, code="123456") != code_mac(KEY, phone=BOB, code="123456")
    other_key = bytes(32)
    assert code_mac(KEY, phone=ALICE, code="123456") != code_mac(
        other_key, phone=ALICE, code="123456"
    )


def test_issue_returns_code_mac_and_five_minute_expiry() -> None:
    codes = LoginCodes(KEY)
    issued = codes.issue(phone=ALICE, now_ms=1_000)
    assert issued.expires_at == 1_000 + 5 * 60 * 1000
    assert issued.mac == code_mac(KEY, phone=ALICE, code=issued.code)
    assert codes.mac(phone=ALICE, code=issued.code) == issued.mac
    assert codes.mac(phone=BOB, code=issued.code) != issued.mac
    assert codes.max_attempts == 5


def test_a2_issued_code_repr_never_shows_the_code() -> None:
    issued = LoginCodes(KEY).issue(phone=ALICE, now_ms=0)
    assert issued.code not in repr(issued).replace(repr(issued.mac), "")


def test_login_codes_are_configurable() -> None:
    codes = LoginCodes(KEY, ttl_seconds=60, max_attempts=3)
    assert codes.issue(phone=ALICE, now_ms=0).expires_at == 60_000
    assert codes.max_attempts == 3
    with pytest.raises(ValueError):
        LoginCodes(KEY, max_attempts=0)


def test_outcomes_map_to_reply_codes() -> None:
    raise_for_outcome("ok")
    for outcome in ("wrong", "expired", "missing"):
        with pytest.raises(CodeInvalid) as caught:
            raise_for_outcome(outcome)
        assert caught.value.code == ErrorCode.CODE_INVALID
        # The reply is the same for all three: it never tells whether a code was sent.
        assert encode_error(caught.value, rid=1) == encode_error(CodeInvalid(), rid=1)
    with pytest.raises(CodeAttemptsExceeded) as exhausted:
        raise_for_outcome("exhausted")
    assert exhausted.value.code == ErrorCode.CODE_ATTEMPTS_EXCEEDED


# --- C2: the request throttle ---------------------------------------------------------------


def test_c2_one_code_per_phone_per_30_seconds() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock)
    throttle.acquire(ALICE)
    clock.advance(10)
    with pytest.raises(CodeRequestThrottled) as caught:
        throttle.acquire(ALICE)
    assert caught.value.code == ErrorCode.RATE_LIMITED
    assert caught.value.retry_after == pytest.approx(20)
    assert caught.value.retryable
    throttle.acquire(BOB)  # another phone is not affected
    clock.advance(20)
    throttle.acquire(ALICE)


def test_c2_ten_codes_per_phone_per_hour() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock)
    for _ in range(10):
        throttle.acquire(ALICE)
        clock.advance(30)
    # 300 s after the first request: the eleventh waits until the first is an hour old.
    with pytest.raises(CodeRequestThrottled) as caught:
        throttle.acquire(ALICE)
    assert caught.value.retry_after == pytest.approx(3600 - 300)
    clock.advance(3600 - 300 - 1)
    with pytest.raises(CodeRequestThrottled):
        throttle.acquire(ALICE)
    clock.advance(1)
    throttle.acquire(ALICE)


def test_c2_refused_requests_are_not_counted() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock)
    throttle.acquire(ALICE)
    for _ in range(5):
        clock.advance(1)
        with pytest.raises(CodeRequestThrottled):
            throttle.acquire(ALICE)
    clock.advance(25)
    throttle.acquire(ALICE)
    assert throttle.statistics() == {"phones_tracked": 1, "refused": 5}


def test_c2_phones_idle_for_an_hour_are_forgotten() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock)
    throttle.acquire(ALICE)
    throttle.acquire(BOB)
    clock.advance(3600)
    throttle.acquire("+8613800000003")
    assert throttle.statistics()["phones_tracked"] == 1


def test_c2_fails_closed_when_too_many_phones_ask_at_once() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock, max_phones=2)
    throttle.acquire(ALICE)
    clock.advance(60)
    throttle.acquire(BOB)
    with pytest.raises(CodeRequestThrottled) as caught:
        throttle.acquire("+8613800000003")
    assert caught.value.retry_after == pytest.approx(3600 - 60)
    clock.advance(30)
    throttle.acquire(ALICE)  # known phones keep their own limits (now t=90 s)
    clock.advance(3600 - 31)
    with pytest.raises(CodeRequestThrottled):  # BOB (t=60 s) is not an hour old yet
        throttle.acquire("+8613800000003")
    clock.advance(1)
    throttle.acquire("+8613800000003")  # BOB aged out


def test_c2_a_clock_stepping_back_does_not_extend_the_wait() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock)
    throttle.acquire(ALICE)
    clock.advance(-3600)  # NTP stepped the wall clock back an hour
    with pytest.raises(CodeRequestThrottled) as caught:
        throttle.acquire(ALICE)
    assert caught.value.retry_after == pytest.approx(30)


def test_c2_limits_are_configurable() -> None:
    clock = ManualClock()
    throttle = CodeRequestThrottle(clock, min_interval_seconds=0, max_per_hour=2)
    throttle.acquire(ALICE)
    throttle.acquire(ALICE)
    with pytest.raises(CodeRequestThrottled):
        throttle.acquire(ALICE)
    with pytest.raises(ValueError):
        CodeRequestThrottle(clock, max_per_hour=0)
