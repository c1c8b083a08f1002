"""Wall-clock time behind a seam, so tests can move it.

Anything persisted (message times, expiry of codes and tokens, DING due times) uses a
``Clock``'s wall time in integer milliseconds. In-process waits use trio's own clock, which
tests drive with ``MockClock``/``autojump_clock``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1000)
