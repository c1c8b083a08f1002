"""The shape every resumable background job shares: run, sleep until nudged or a while
passes, run again. A failure is logged and retried on the next round, never fatal: the
work is recorded durably, so doing it later loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)


class Nudge:
    """Wakes a job early. Nudges coalesce: many before the job looks count as one."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[None](1)

    def __call__(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(None)

    async def wait(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._receive.receive()


async def run_rounds(
    name: str,
    round_: Callable[[], Awaitable[None]],
    nudge: Nudge,
    *,
    every: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``round_`` now, then whenever nudged, and at least every ``every`` seconds."""
    task_status.started()
    while True:
        try:
            await round_()
        except Exception:
            log.exception(
                "background job failed; it resumes on the next round", extra={"job": name}
            )
        await nudge.wait(every)
