"""PushQueue keeps a user's settings and devices for a while, so a group message does not
cost two store reads per member; ``forget`` (called by the settings and login services)
and the lifetime bring changes in."""

from __future__ import annotations

import trio
import trio.testing

from server.bus import MemoryBus
from server.hub import Hub
from server.notify.memory import MemoryNotifier
from server.push import PushQueue
from storage.memory import open_memory_stores
from storage.records import Entry


class _CountingPersonal:
    """The personal store, counting the reads the push path makes."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name in ("get_settings", "list_devices"):

            async def counted(*args: object, **kwargs: object) -> object:
                self.reads += 1
                return await attr(*args, **kwargs)

            return counted
        return attr


def _entry(n: int) -> Entry:
    return Entry(stream=n, conv_id="d:1:2", seq=n, kind="message", sender=999, ts=0)


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_settings_and_devices_are_read_once_then_forgotten_on_change(
    autojump_clock: object,
) -> None:
    async with open_memory_stores() as stores:
        user = await stores.personal.create_user(phone="+15550100", display_name="b", now=0)
        await stores.personal.register_device(user_id=user.user_id, name="phone", now=0)
        personal = _CountingPersonal(stores.personal)
        notifier = MemoryNotifier()
        pushes = PushQueue(
            personal=personal,  # type: ignore[arg-type]
            hub=Hub(MemoryBus()),
            notifier=notifier,
            cache_seconds=30.0,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(pushes.run)
            for n in range(1, 4):
                pushes.offer(_entry(n), [user.user_id])
            await _settle()
            assert personal.reads == 2  # one get_settings, one list_devices, for 3 messages
            assert len(notifier.pushes) == 3

            # A second device (the login service calls forget): it gets the next push.
            await stores.personal.register_device(user_id=user.user_id, name="tablet", now=0)
            pushes.forget(user.user_id)
            pushes.offer(_entry(4), [user.user_id])
            await _settle()
            assert personal.reads == 4
            assert len(notifier.pushes) == 5

            # Past the lifetime the facts are read again.
            await trio.sleep(31)
            pushes.offer(_entry(5), [user.user_id])
            await _settle()
            assert personal.reads == 6
            nursery.cancel_scope.cancel()
