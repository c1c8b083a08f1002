"""The shape every resumable background job shares: run, sleep until nudged or a while
passes, run again. A failure is logged and retried on the next round, never fatal: the
work is recorded durably, so doing it later loses nothing.

A store that refuses writes (``REFUSED``: its writer thread died, which lasts until the
server restarts; the disk is full; it is closing) must not end the server either: the
server stays up, serving reads and refusing writes with 4004 while ``/healthz`` answers 503,
so that an orchestrator restarts it. ``Outage`` is how every background service meets such
a refusal: logged once per outage (not once per attempt), then retried with a doubling
backoff, so that no job spins on a store that refuses everything, and cancelled at once by
a shutdown like any other wait.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from storage.errors import StorageFull, StoreClosed, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors of a store that refused a write as a whole (nothing of it is stored) for a reason
#: outside the job: retrying later is the answer, not a bug report per attempt.
REFUSED: tuple[type[StoreError], ...] = (StoreUnavailable, StorageFull, StoreClosed)
#: The wait after the first refusal of an outage; it doubles with each refusal, up to
#: ``RETRY_MAX_SECONDS``. Read at each refusal (tests shorten them).
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


class Outage:
    """One background job's refused writes (``REFUSED``) from the first to the next write
    that goes through: the first is logged at ERROR with its cause, the others only counted,
    and the end at WARNING. ``refused`` answers how long to wait before trying again."""

    def __init__(self, job: str) -> None:
        self.job = job
        #: Refusals in the current outage (0: writes go through).
        self.refusals = 0

    def refused(self, error: StoreError) -> float:
        """A write of the job was refused: the seconds to wait before the next attempt."""
        if self.refusals == 0:
            log.error(
                "%s: a store refuses its writes; retrying with backoff, logged once until"
                " they go through (a dead writer lasts until a restart: see /healthz)",
                self.job,
                exc_info=error,
                extra={"job": self.job},
            )
        self.refusals += 1
        doubled = RETRY_FIRST_SECONDS * 2 ** min(self.refusals - 1, 32)
        return float(min(RETRY_MAX_SECONDS, doubled))

    async def back_off(self, error: StoreError) -> None:
        """Note the refusal and wait before the next attempt (cancellable)."""
        await trio.sleep(self.refused(error))

    def over(self) -> None:
        """A write of the job went through: the outage, if any, is over."""
        if self.refusals:
            log.warning(
                "%s: writes go through again",
                self.job,
                extra={"job": self.job, "refusals": self.refusals},
            )
            self.refusals = 0

    async def retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it is not refused, backing off in between; any other
        error goes to the caller."""
        while True:
            try:
                result = await attempt()
            except REFUSED as error:
                await self.back_off(error)
                continue
            self.over()
            return result


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
    """Run ``round_`` now, then whenever nudged, and at least every ``every`` seconds. A
    round whose write was refused is retried after the ``Outage`` backoff, nudges or not."""
    outage = Outage(name)
    task_status.started()
    while True:
        try:
            await round_()
        except REFUSED as error:
            await outage.back_off(error)
            continue
        except Exception:
            log.exception(
                "background job failed; it resumes on the next round", extra={"job": name}
            )
        else:
            outage.over()
        await nudge.wait(every)
