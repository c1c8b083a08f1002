"""P6: devices' last sign-in times are noted without waiting and written in batches."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from server.last_seen import LastSeen
from storage.memory import open_memory_stores


class FlakyPersonal:
    """Fails the first batch write, records the rest."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.fail_next = True

    async def touch_devices(self, seen: Sequence[tuple[int, int]]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk unavailable")
        self.batches.append(list(seen))


async def test_p6_sign_ins_are_written_in_one_batch_with_the_latest_time() -> None:
    async with open_memory_stores() as stores:
        phone = await stores.personal.register_device(user_id=1, name="phone", now=0)
        tablet = await stores.personal.register_device(user_id=1, name="tablet", now=0)
        seen = LastSeen(stores.personal)
        seen.note(phone.device_id, now=500)
        seen.note(phone.device_id, now=300)  # an older time never wins
        seen.note(tablet.device_id, now=700)
        before = await stores.personal.get_device(phone.device_id)
        assert before is not None and before.last_seen_at == 0  # nothing written yet
        await seen.flush()
        times = {d.device_id: d.last_seen_at for d in await stores.personal.list_devices(1)}
        assert times == {phone.device_id: 500, tablet.device_id: 700}
        assert seen.written == 2
        await seen.flush()  # nothing pending: nothing written
        assert seen.written == 2


async def test_p6_a_failed_batch_is_kept_and_written_by_the_next_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    personal = FlakyPersonal()
    seen = LastSeen(personal, interval=1.0)  # type: ignore[arg-type]
    seen.note(7, now=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(seen.run)
        seen.note(8, now=200)
        await trio.sleep(1.5)  # the first round fails
        seen.note(7, now=150)
        await trio.sleep(1.0)  # the second writes what is pending, latest times
        nursery.cancel_scope.cancel()
    assert personal.batches == [[(7, 150), (8, 200)]]
