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


class _Online:
    """What the hub needs of a connection: whose it is and from which device."""

    def __init__(self, user_id: int, device_id: int) -> None:
        self.user_id = user_id
        self.device_id = device_id


async def _drain(pushes: PushQueue) -> None:
    """Run the push task until it has handled everything queued."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pushes.run)
        await _settle()
        nursery.cancel_scope.cancel()


async def test_a_user_online_on_every_device_wakes_nothing_once_known(
    autojump_clock: object,
) -> None:
    async with open_memory_stores() as stores:
        user = await stores.personal.create_user(phone="+15550100", display_name="b", now=0)
        phone = await stores.personal.register_device(user_id=user.user_id, name="phone", now=0)
        personal = _CountingPersonal(stores.personal)
        notifier = MemoryNotifier()
        hub = Hub(MemoryBus())
        pushes = PushQueue(
            personal=personal,  # type: ignore[arg-type]
            hub=hub,
            notifier=notifier,
            cache_seconds=30.0,
        )
        hub.attach(_Online(user.user_id, phone.device_id))  # type: ignore[arg-type]
        # Nothing known yet: offered, the task reads the facts and pushes nothing.
        pushes.offer(_entry(1), [user.user_id])
        assert pushes.statistics()["queued"] == 1
        await _drain(pushes)
        assert personal.reads == 2
        assert notifier.pushes == []

        # Known and every device online here: settled at the offer, nothing queued.
        pushes.offer(_entry(2), [user.user_id])
        assert pushes.statistics()["queued"] == 0

        # A second device, offline (the login service calls forget): offered again, and
        # that device gets its push, every time.
        await stores.personal.register_device(user_id=user.user_id, name="tablet", now=0)
        pushes.forget(user.user_id)
        pushes.offer(_entry(3), [user.user_id])
        await _drain(pushes)
        assert len(notifier.pushes) == 1
        pushes.offer(_entry(4), [user.user_id])
        assert pushes.statistics()["queued"] == 1
        await _drain(pushes)
        assert len(notifier.pushes) == 2

        # Notifications off: nothing is due, nothing is queued while that is known.
        await stores.personal.write_settings(
            user.user_id, notifications=False, event_body=b"", now=0
        )
        pushes.forget(user.user_id)
        pushes.offer(_entry(5), [user.user_id])
        await _drain(pushes)
        pushes.offer(_entry(6), [user.user_id])
        assert pushes.statistics()["queued"] == 0
        assert len(notifier.pushes) == 2

        # Past the lifetime the facts are unknown again: offered, and read afresh.
        await trio.sleep(31)
        reads = personal.reads
        pushes.offer(_entry(7), [user.user_id])
        assert pushes.statistics()["queued"] == 1
        await _drain(pushes)
        assert personal.reads == reads + 2
