"""Offline push notifications (M3), through the Notifier.

After a message commits, its recipients are offered here in one item. A background task
looks up each recipient's settings and devices and pushes to every device that has no open
connection in this process, unless the user switched notifications off or muted the
conversation. Pushes are best effort: the queue is bounded and, when it is full, the
newest offer is dropped and counted (``statistics()['dropped']``); the message itself is
durable and reaches the device when it next syncs. Push payloads never carry message
content, only that there is something new.

A user's settings and devices are kept for ``cache_seconds`` (a group message offers every
member: without it, each message would cost two store reads per member). Changes made
through this process drop them at once (``forget``, from the settings and login services);
the lifetime bounds how long a change made by another process (``rivet users`` on the same
data directory) can go unnoticed, within the best effort above.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

import trio

from server.hub import Hub
from server.notify.interface import Notifier
from storage.interfaces import PersonalStore
from storage.records import Entry, Settings

log = logging.getLogger(__name__)


class PushQueue:
    def __init__(
        self,
        *,
        personal: PersonalStore,
        hub: Hub,
        notifier: Notifier,
        capacity: int = 1024,
        cache_seconds: float = 30.0,
        cache_users: int = 100_000,
    ) -> None:
        self._personal = personal
        self._hub = hub
        self._notifier = notifier
        self._cache_seconds = cache_seconds
        self._cache_users = cache_users
        #: user -> (valid until, settings, device ids), least recently used first.
        self._known: OrderedDict[int, tuple[float, Settings, tuple[int, ...]]] = OrderedDict()
        #: Bumped by ``forget``, so a read that raced a change is not kept.
        self._generation = 0
        self._send, self._receive = trio.open_memory_channel[tuple[Entry, tuple[int, ...]]](
            capacity
        )
        self.dropped = 0
        self.pushed = 0

    def offer(self, entry: Entry, recipients: Iterable[int]) -> None:
        # Every recipient but the sender who may need a push: a user online on one device
        # may have others offline, and each offline device gets its push (checked per device
        # in ``_push_user``). The usual message, to a user whose every device is online here,
        # is settled now from the cached facts and wakes nothing.
        now = trio.current_time()
        users = tuple(u for u in recipients if u != entry.sender and self._may_push(entry, u, now))
        if not users:
            return
        try:
            self._send.send_nowait((entry, users))
        except trio.WouldBlock:
            self.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for entry, users in self._receive:
            now = trio.current_time()
            for user_id in users:
                await self._push_user(entry, user_id, now)

    def _may_push(self, entry: Entry, user_id: int, now: float) -> bool:
        """False only when ``_push_user`` would push nothing, judged from facts it would use
        itself: the user is online here and the cached settings and devices (still fresh)
        say no device of theirs is both offline and due a push. Unknown or expired facts,
        or a user not online here, go to the task, which reads them."""
        if not self._hub.is_online(user_id):
            return True
        known = self._known.get(user_id)
        if known is None or known[0] <= now:
            return True
        settings, devices = known[1], known[2]
        if not settings.notifications or entry.conv_id in settings.muted_conversations:
            return False
        online = self._hub.online_devices(user_id)
        return any(device_id not in online for device_id in devices)

    def forget(self, user_id: int) -> None:
        """``user_id``'s settings or devices changed: read them afresh next time."""
        self._generation += 1
        self._known.pop(user_id, None)

    async def _facts(self, user_id: int, now: float) -> tuple[Settings, tuple[int, ...]]:
        known = self._known.get(user_id)
        if known is not None and known[0] > now:
            self._known.move_to_end(user_id)
            return known[1], known[2]
        generation = self._generation
        settings = await self._personal.get_settings(user_id)
        devices = tuple(d.device_id for d in await self._personal.list_devices(user_id))
        if generation == self._generation:
            self._known[user_id] = (now + self._cache_seconds, settings, devices)
            self._known.move_to_end(user_id)
            if len(self._known) > self._cache_users:
                self._known.popitem(last=False)
        return settings, devices

    async def _push_user(self, entry: Entry, user_id: int, now: float) -> None:
        settings, devices = await self._facts(user_id, now)
        if not settings.notifications or entry.conv_id in settings.muted_conversations:
            return
        online = self._hub.online_devices(user_id)
        for device_id in devices:
            if device_id in online:
                continue
            try:
                await self._notifier.push(
                    user_id=user_id,
                    device_id=device_id,
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
