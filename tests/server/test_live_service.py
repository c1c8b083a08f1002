"""The live service's background path without a network (L1): a stream restored after a
restart whose host never comes back ends with ``host_left``, also when the first attempt to
complete its record fails. Time is trio's ``MockClock``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
import trio.testing

from server.config import Config
from server.services import live as live_service
from storage.errors import StorageFull
from storage.live import LiveRecord, NewLive
from storage.memory import open_memory_stores
from storage.memory.live import MemoryLiveStore
from storage.stores import Stores
from tests.server.routers import build_router


class FlakyLiveStore(MemoryLiveStore):
    """Refuses the first ``end_live`` as a full disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def end_live(
        self,
        origin: str,
        number: int,
        *,
        ended_at: int,
        reason: str,
        peak_viewers: int,
        total_viewers: int,
    ) -> LiveRecord | None:
        if not self.refused:
            self.refused += 1
            raise StorageFull("disk full")
        return await super().end_live(
            origin,
            number,
            ended_at=ended_at,
            reason=reason,
            peak_viewers=peak_viewers,
            total_viewers=total_viewers,
        )


async def test_l1_a_restored_stream_ends_after_grace_retrying_a_failed_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(store="memory", data_dir=tmp_path, live_grace_seconds=60.0)
    live_store = FlakyLiveStore()
    async with open_memory_stores() as memory:
        stores: Stores = dataclasses.replace(memory, live=live_store)
        record = await live_store.start_live(
            NewLive(origin="g:3", host=1, host_device=2, title="t", description="", started_at=1)
        )
        ctx = build_router(config, stores).ctx
        async with trio.open_nursery() as nursery:
            began = trio.current_time()
            await nursery.start(live_service.run, ctx)
            stream = ctx.live.registry.get("g:3/1")
            assert stream is not None and stream.host_conn is None
            await trio.sleep(59)
            assert live_store.refused == 0 and ctx.live.registry.get("g:3/1") is stream
            await trio.sleep(2)  # the grace period passed: the first attempt fails
            assert live_store.refused == 1 and not stream.ended
            assert ctx.live.registry.get("g:3/1") is stream
            await trio.sleep(live_service.EXPIRY_RETRY_SECONDS + 1)
            assert stream.ended and ctx.live.registry.get("g:3/1") is None
            ended_at = trio.current_time() - began
            nursery.cancel_scope.cancel()
        stored = await live_store.get_live("g:3", record.number)
        assert stored is not None and stored.end_reason == "host_left"
        assert ended_at >= 60 + live_service.EXPIRY_RETRY_SECONDS
