"""One-time login codes (A2) and the per-phone throttle on asking for them (C2).

A code is 6 decimal digits from ``secrets``. The store keeps only
``HMAC-SHA256(mac_key, phone + ":" + code)``: a plain hash of a 6-digit code is reversed by
trying all million codes, a keyed MAC is not without the key. The phone is inside the MAC,
so the same code for two phones gives two unrelated MACs. The plain code exists only in the
``IssuedCode`` handed to the ``Notifier``; it is never stored, and its repr hides it so it
never reaches a log.

The router's flow::

    throttle.acquire(phone)                        # CodeRequestThrottled (C2)
    issued = codes.issue(phone=phone, now_ms=now)
    await personal.put_login_code(phone=phone, mac=issued.mac, expires_at=issued.expires_at)
    await notifier.send_login_code(phone=phone, code=issued.code)
    ...
    outcome = await personal.consume_login_code(
        phone=phone, mac=codes.mac(phone=phone, code=code), now=now,
        max_attempts=codes.max_attempts)
    raise_for_outcome(outcome)                     # CodeInvalid / CodeAttemptsExceeded
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from protocol import limits
from server.auth.errors import CodeAttemptsExceeded, CodeInvalid, CodeRequestThrottled
from server.clock import Clock
from storage.records import LoginCodeOutcome

DEFAULT_CODE_TTL_SECONDS: Final = 5 * 60
DEFAULT_MAX_ATTEMPTS: Final = 5
#: C2: at most one code per phone per 30 s, and 10 per phone per hour.
DEFAULT_MIN_INTERVAL_SECONDS: Final = 30.0
DEFAULT_MAX_PER_HOUR: Final = 10
#: Phones the throttle tracks at once (those that asked within the last hour).
DEFAULT_MAX_PHONES: Final = 100_000

_HOUR_MS: Final = 3600 * 1000


def generate_code(digits: int = limits.LOGIN_CODE_DIGITS) -> str:
    """A uniformly random code of ``digits`` decimal digits, leading zeros kept."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def code_mac(mac_key: bytes, *, phone: str, code: str) -> bytes:
    """A2: HMAC-SHA256(mac_key, phone + ":" + code), the only form a code is stored in."""
    return hmac.new(mac_key, f"{phone}:{code}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class IssuedCode:
    #: The plain code: give it to ``Notifier.send_login_code`` and drop it (never logged).
    code: str = field(repr=False)
    #: What ``put_login_code`` stores.
    mac: bytes
    expires_at: int


class LoginCodes:
    """Issues codes and computes the MAC of a code a client typed."""

    def __init__(
        self,
        mac_key: bytes,
        *,
        ttl_seconds: float = DEFAULT_CODE_TTL_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if ttl_seconds <= 0 or max_attempts < 1:
            raise ValueError("ttl_seconds must be positive and max_attempts at least 1")
        self._mac_key = mac_key
        self._ttl_ms = int(ttl_seconds * 1000)
        self._max_attempts = max_attempts

    @property
    def max_attempts(self) -> int:
        """Wrong tries a code survives; pass to ``consume_login_code``."""
        return self._max_attempts

    def issue(self, *, phone: str, now_ms: int) -> IssuedCode:
        code = generate_code()
        return IssuedCode(
            code=code,
            mac=code_mac(self._mac_key, phone=phone, code=code),
            expires_at=now_ms + self._ttl_ms,
        )

    def mac(self, *, phone: str, code: str) -> bytes:
        return code_mac(self._mac_key, phone=phone, code=code)


def raise_for_outcome(outcome: LoginCodeOutcome) -> None:
    """Turn ``consume_login_code``'s outcome into the client's error; ``ok`` returns.

    ``wrong``, ``expired`` and ``missing`` all give ``CodeInvalid`` so a reply never tells
    whether a code was requested for a phone; ``exhausted`` gives ``CodeAttemptsExceeded``
    (request a new code).
    """
    if outcome == "ok":
        return
    if outcome == "exhausted":
        raise CodeAttemptsExceeded()
    raise CodeInvalid(f"login code {outcome}")


class CodeRequestThrottle:
    """C2: limits how often one phone may be sent a code, so the login exchange cannot be
    used to spam someone with SMS or run up the SMS bill.

    In memory, per process, on the injected wall clock (a clock that steps backwards is
    treated as standing still). A phone may get one code per ``min_interval_seconds`` and
    ``max_per_hour`` in any sliding hour. At most ``max_phones`` phones are tracked; when
    that many distinct phones asked within the hour, new phones are refused until the
    oldest entry ages out. *Decision:* fail closed under such a flood, because each code
    costs an SMS; the per-connection request rate limits stop it earlier in practice.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_interval_seconds: float = DEFAULT_MIN_INTERVAL_SECONDS,
        max_per_hour: int = DEFAULT_MAX_PER_HOUR,
        max_phones: int = DEFAULT_MAX_PHONES,
    ) -> None:
        if min_interval_seconds < 0 or max_per_hour < 1 or max_phones < 1:
            raise ValueError("throttle limits must be positive")
        self._clock = clock
        self._interval_ms = int(min_interval_seconds * 1000)
        self._max_per_hour = max_per_hour
        self._max_phones = max_phones
        self._high_water = 0
        self._refused = 0
        # Phone -> times of its requests within the last hour, oldest phone first (ordered
        # by latest request, so expired phones are always at the front).
        self._recent: OrderedDict[str, deque[int]] = OrderedDict()

    def acquire(self, phone: str) -> None:
        """Count a code request for ``phone``, or raise ``CodeRequestThrottled`` with
        ``retry_after`` (seconds) and count nothing."""
        now = self._now()
        self._expire(now)
        stamps = self._recent.get(phone)
        wait_ms = 0
        if stamps is not None:
            while stamps and stamps[0] <= now - _HOUR_MS:
                stamps.popleft()
            if stamps:
                wait_ms = max(wait_ms, stamps[-1] + self._interval_ms - now)
            if len(stamps) >= self._max_per_hour:
                wait_ms = max(wait_ms, stamps[-self._max_per_hour] + _HOUR_MS - now)
        elif len(self._recent) >= self._max_phones:
            oldest = next(iter(self._recent.values()))
            wait_ms = max(1, oldest[-1] + _HOUR_MS - now)
        if wait_ms > 0:
            self._refused += 1
            raise CodeRequestThrottled(retry_after=wait_ms / 1000)
        if stamps is None:
            stamps = self._recent[phone] = deque()
        stamps.append(now)
        self._recent.move_to_end(phone)

    def statistics(self) -> dict[str, int]:
        return {"phones_tracked": len(self._recent), "refused": self._refused}

    def _now(self) -> int:
        self._high_water = max(self._high_water, self._clock.now_ms())
        return self._high_water

    def _expire(self, now: int) -> None:
        while self._recent:
            phone, stamps = next(iter(self._recent.items()))
            if stamps and stamps[-1] > now - _HOUR_MS:
                break
            del self._recent[phone]
