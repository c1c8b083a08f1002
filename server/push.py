"""Offline push notifications (M3), through the Notifier.

After a message commits, its recipients are offered here in one item. A background task
looks up each recipient's settings and devices and pushes to every device that has no open
connection in this process, unless the user switched notifications off or muted the
conversation. Pushes are best effort: the queue is bounded and, when it is full, the
newest offer is dropped and counted (``statistics()['dropped']``); the message itself is
durable and reaches the device when it next syncs. Push payloads never carry message
content, only that there is something new.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio

from server.hub import Hub
from server.notify.interface import Notifier
from storage.interfaces import PersonalStore
from storage.records import Entry

log = logging.getLogger(__name__)


class PushQueue:
    def __init__(
        self, *, personal: PersonalStore, hub: Hub, notifier: Notifier, capacity: int = 1024
    ) -> None:
        self._personal = personal
        self._hub = hub
        self._notifier = notifier
        self._send, self._receive = trio.open_memory_channel[tuple[Entry, tuple[int, ...]]](
            capacity
        )
        self.dropped = 0
        self.pushed = 0

    def offer(self, entry: Entry, recipients: Iterable[int]) -> None:
        # Every recipient but the sender: a user online on one device may have others
        # offline, and each offline device gets its push (checked per device below).
        users = tuple(u for u in recipients if u != entry.sender)
        if not users:
            return
        try:
            self._send.send_nowait((entry, users))
        except trio.WouldBlock:
            self.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for entry, users in self._receive:
            for user_id in users:
                await self._push_user(entry, user_id)

    async def _push_user(self, entry: Entry, user_id: int) -> None:
        settings = await self._personal.get_settings(user_id)
        if not settings.notifications or entry.conv_id in settings.muted_conversations:
            return
        online = self._hub.online_devices(user_id)
        for device in await self._personal.list_devices(user_id):
            if device.device_id in online:
                continue
            try:
                await self._notifier.push(
                    user_id=user_id,
                    device_id=device.device_id,
                    title="New message",
                    body="You have a new message",
                    conv=entry.conv_id,
                )
            except Exception:
                log.exception("push failed", extra={"user_id": user_id})
                continue
            self.pushed += 1

    def statistics(self) -> dict[str, int]:
        return {
            "queued": self._send.statistics().current_buffer_used,
            "dropped": self.dropped,
            "pushed": self.pushed,
        }
