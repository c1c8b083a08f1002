"""The durable-timer heap (``server.scheduler``) under trio's MockClock: due order, batching,
wall-clock jumps, retries after a failed fire, and 100,000 pending timers in one task."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from server.clock import ManualClock
from server.scheduler import Scheduler
from storage.ding_records import NewDing, NewStep
from storage.memory.ding import MemoryDingStore
from tests.server.wall_clock import TrioWallClock


class Recorder:
    def __init__(self, clock: TrioWallClock | ManualClock) -> None:
        self.clock = clock
        self.calls: list[tuple[int, list[int]]] = []
        self.fail_next = 0

    async def fire(self, keys: list[int]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("the store is down")
        self.calls.append((self.clock.now_ms(), keys))


async def test_timers_fire_in_due_order_at_their_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioWallClock()
    recorder = Recorder(clock)
    scheduler: Scheduler[int] = Scheduler(clock, recorder.fire, max_sleep=5.0)
    t0 = clock.now_ms()
    scheduler.schedule(t0 + 3_000, 3)
    scheduler.schedule(t0 + 1_000, 1)
    scheduler.schedule(t0 + 1_000, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        scheduler.schedule(t0 + 500, 0)  # earlier than the head: wakes the sleeping task
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert recorder.calls == [(t0 + 500, [0]), (t0 + 1_000, [1, 2]), (t0 + 3_000, [3])]
    assert scheduler.statistics().pending == 0
    assert scheduler.statistics().fired == 4


async def test_timers_load_from_the_store_and_batch(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioWallClock()
    recorder = Recorder(clock)
    scheduler: Scheduler[int] = Scheduler(clock, recorder.fire, batch=2)
    t0 = clock.now_ms()

    async def load() -> AsyncIterator[tuple[int, int]]:
        for key in range(5):
            yield t0 - 1, key  # all overdue (e.g. due while the server was down)

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run, load)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [keys for _, keys in recorder.calls] == [[0, 1], [2, 3], [4]]


async def test_a_wall_clock_jump_is_noticed_within_max_sleep_or_at_a_poke(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = ManualClock()
    recorder = Recorder(clock)
    scheduler: Scheduler[int] = Scheduler(clock, recorder.fire, max_sleep=2.0)
    scheduler.schedule(clock.now_ms() + 3_600_000, 7)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(60)
        assert recorder.calls == []  # the wall clock has not moved
        clock.advance(3_600)
        before = trio.current_time()
        await trio.sleep(2.5)
        assert [keys for _, keys in recorder.calls] == [[7]]
        scheduler.schedule(clock.now_ms() + 10_000, 8)
        await trio.sleep(0.1)
        clock.advance(10)
        scheduler.poke()
        await trio.sleep(0.01)
        assert [keys for _, keys in recorder.calls] == [[7], [8]]
        assert trio.current_time() - before < 3.0
        nursery.cancel_scope.cancel()


async def test_a_failed_fire_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    clock = TrioWallClock()
    recorder = Recorder(clock)
    recorder.fail_next = 2
    scheduler: Scheduler[int] = Scheduler(clock, recorder.fire, retry_seconds=5.0)
    t0 = clock.now_ms()
    scheduler.schedule(t0, 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert recorder.calls == [(t0 + 10_000, [1])]
    assert scheduler.statistics().failures == 2


async def test_g1_100k_pending_steps_wait_in_one_heap_and_one_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """100,000 scheduled DINGs cost one heap entry each and one task: no task per DING.
    Their steps are loaded from the memory store, as after a restart."""
    store = MemoryDingStore()
    clock = TrioWallClock()
    t0 = clock.now_ms()
    count = 100_000
    for index in range(count):
        due = t0 + 3_600_000 + (index // 1000) * 1000  # 100 distinct due times
        await store.create(
            NewDing(
                sender=1,
                payer="user:1",
                text="x",
                cmid=str(index),
                fingerprint=b"",
                state="sent",
                created_at=t0,
                send_at=t0,
                sms_after_s=3600,
                call_after_s=None,
                recipients=(2,),
                steps=(
                    NewStep(user_id=2, channel="in_app", due_at=t0, state="sent"),
                    NewStep(user_id=2, channel="sms", due_at=due),
                ),
            )
        )
    recorder = Recorder(clock)
    scheduler: Scheduler[int] = Scheduler(clock, recorder.fire, batch=20_000)

    async def load() -> AsyncIterator[tuple[int, int]]:
        after = None
        while page := await store.pending_steps(after=after, limit=10_000):
            for item in page:
                yield item
            after = page[-1]

    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run, load)
            heap_bytes = tracemalloc.get_traced_memory()[0]
            assert scheduler.statistics().pending == count
            assert len(nursery.child_tasks) == 1  # the scheduler's one task
            assert heap_bytes < 64 * 1024 * 1024
            await trio.sleep(3_600 + 101)
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    fired = [key for _, keys in recorder.calls for key in keys]
    assert len(fired) == count and fired == sorted(fired)
    assert scheduler.statistics().pending == 0


@pytest.mark.parametrize("bad", [{"max_sleep": 0.0}, {"batch": 0}])
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    async def fire(keys: list[int]) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(ValueError):
        Scheduler(ManualClock(), fire, **bad)  # type: ignore[arg-type]
