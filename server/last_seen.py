"""When each device last connected, written in batches off the sign-in path.

P6 finds dormant accounts by the latest time any of their devices connected. That time
need not be durable before ``hello``/``auth`` answers: it is not the user's data and no
reply promises it, and P6 counts in months. So a sign-in only notes it here, and one task
writes every noted time in one transaction each ``interval`` seconds (and once more at
shutdown). A crash loses at most the last interval's sign-in times, which moves a
dormancy clock by seconds against twelve months. Before this, every sign-in waited for
its own durable write (one fsync each, the whole of a reconnect storm's writes).
"""

from __future__ import annotations

import logging

import trio

from server.background import REFUSED, Outage
from storage.interfaces import PersonalStore

log = logging.getLogger(__name__)


class LastSeen:
    def __init__(self, personal: PersonalStore, *, interval: float = 1.0) -> None:
        self._personal = personal
        self._interval = interval
        #: The wait before the next write: ``interval``, or longer while they are refused.
        self._wait = interval
        self._outage = Outage("last-seen times")
        #: device id -> the latest time it was seen, not written yet.
        self._pending: dict[int, int] = {}
        self.written = 0

    def note(self, device_id: int, *, now: int) -> None:
        """The device connected at ``now`` (wall-clock ms); never blocks."""
        if now > self._pending.get(device_id, -1):
            self._pending[device_id] = now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._wait)
            await self.flush()

    async def flush(self) -> None:
        """Write every noted time in one transaction (what fails is noted again)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            with trio.CancelScope(shield=True):
                await self._personal.touch_devices(sorted(batch.items()))
        except Exception as error:
            if isinstance(error, REFUSED):
                # Logged once per outage; the next tries back off.
                self._wait = max(self._interval, self._outage.refused(error))
            else:
                log.exception("writing last-seen times failed; will retry")
            for device_id, at in batch.items():
                self.note(device_id, now=at)
            return
        self._outage.over()
        self._wait = self._interval
        self.written += len(batch)
