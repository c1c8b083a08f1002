"""Waiting for a condition that no event announces (a count in the server's state)."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_until(condition: Callable[[], bool], *, step: float = 0.02) -> None:
    """Poll ``condition`` every ``step`` seconds; bound it with ``trio.fail_after``."""
    # The state has no event to wait on, so this polls; the caller's fail_after bounds it.
    while True:
        if condition():
            return
        await trio.sleep(step)
