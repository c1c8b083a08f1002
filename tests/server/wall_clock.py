"""A wall clock for tests that moves with trio's clock, so ``autojump_clock`` moves both the
persisted times (``server.clock.Clock``) and the in-process waits together."""

from __future__ import annotations

import trio

#: 2026-01-01T00:00:00Z, the start of ``ManualClock`` too.
START_MS = 1_767_225_600_000


class TrioWallClock:
    def __init__(self, start_ms: int = START_MS) -> None:
        self.start_ms = start_ms

    def now_ms(self) -> int:
        return self.start_ms + int(trio.current_time() * 1000)
