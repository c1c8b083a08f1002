"""Conformance of every ``LiveStore`` backend (L1) to ``storage/live.py``.

Only the ``stores`` fixture and the public interface are used, so each test runs on every
backend. Times are fixed integers, never the real clock.
"""

from __future__ import annotations

from pathlib import Path

from storage.live import LiveRecord, LiveStore, NewLive
from storage.stores import Stores

NOW = 1_000_000


def new_live(origin: str = "g:1", *, host: int = 1, links: tuple[str, ...] = ()) -> NewLive:
    return NewLive(
        origin=origin,
        host=host,
        host_device=10,
        title="launch",
        description="watch the launch",
        links=links,
        started_at=NOW,
    )


async def end(store: LiveStore, record: LiveRecord, **figures: int) -> LiveRecord | None:
    return await store.end_live(
        record.origin,
        record.number,
        ended_at=NOW + 60_000,
        reason="host",
        peak_viewers=figures.get("peak", 5),
        total_viewers=figures.get("total", 8),
    )


async def test_l1_start_records_an_active_stream_numbered_per_origin(stores: Stores) -> None:
    live = stores.live
    first = await live.start_live(new_live("g:1", links=("g:2", "g:3")))
    assert (first.origin, first.number, first.host, first.host_device) == ("g:1", 1, 1, 10)
    assert (first.title, first.description, first.started_at) == (
        "launch",
        "watch the launch",
        NOW,
    )
    assert first.links == ("g:2", "g:3") and first.invited == ()
    assert first.active and first.ended_at is None and first.end_reason is None
    assert (first.peak_viewers, first.total_viewers) == (0, 0)
    other = await live.start_live(new_live("g:9"))
    assert other.number == 1
    assert await live.get_live("g:1", 1) == first


async def test_l1_numbers_are_never_reused_in_an_origin(stores: Stores) -> None:
    live = stores.live
    first = await live.start_live(new_live())
    await end(live, first)
    second = await live.start_live(new_live())
    assert second.number == 2
    assert (await live.get_live("g:1", 1)) is not None


async def test_l1_links_at_start_drop_the_origin_and_duplicates(stores: Stores) -> None:
    record = await stores.live.start_live(new_live("g:1", links=("g:2", "g:1", "g:2", "g:4")))
    assert record.links == ("g:2", "g:4")


async def test_l1_add_links_appends_in_order_without_duplicates(stores: Stores) -> None:
    live = stores.live
    record = await live.start_live(new_live(links=("g:2",)))
    assert await live.add_live_links("g:1", record.number, groups=["g:5", "g:2", "g:1", "g:3"])
    assert await live.add_live_links("g:1", record.number, groups=["g:3", "g:6"])
    stored = await live.get_live("g:1", record.number)
    assert stored is not None and stored.links == ("g:2", "g:5", "g:3", "g:6")


async def test_l1_invites_are_a_set_in_ascending_order(stores: Stores) -> None:
    live = stores.live
    record = await live.start_live(new_live())
    assert await live.add_live_invites("g:1", record.number, users=[7, 3, 7])
    assert await live.add_live_invites("g:1", record.number, users=[5, 3])
    stored = await live.get_live("g:1", record.number)
    assert stored is not None and stored.invited == (3, 5, 7)


async def test_l1_checkpoint_keeps_the_figures_of_an_active_stream(stores: Stores) -> None:
    live = stores.live
    record = await live.start_live(new_live())
    assert await live.checkpoint_live("g:1", record.number, peak_viewers=12, total_viewers=30)
    stored = await live.get_live("g:1", record.number)
    assert stored is not None and stored.active
    assert (stored.peak_viewers, stored.total_viewers) == (12, 30)


async def test_l1_end_completes_the_record_and_the_first_end_wins(stores: Stores) -> None:
    live = stores.live
    record = await live.start_live(new_live(links=("g:2",)))
    ended = await end(live, record, peak=40, total=90)
    assert ended is not None and not ended.active
    assert (ended.ended_at, ended.end_reason) == (NOW + 60_000, "host")
    assert (ended.peak_viewers, ended.total_viewers) == (40, 90)
    assert ended.links == ("g:2",) and ended.host == 1
    again = await live.end_live(
        "g:1", record.number, ended_at=NOW + 99_000, reason="admin", peak_viewers=1, total_viewers=1
    )
    assert again == ended
    assert await live.get_live("g:1", record.number) == ended


async def test_l1_an_ended_or_unknown_stream_takes_no_changes(stores: Stores) -> None:
    live = stores.live
    record = await live.start_live(new_live())
    ended = await end(live, record)
    assert not await live.add_live_links("g:1", record.number, groups=["g:2"])
    assert not await live.add_live_invites("g:1", record.number, users=[4])
    assert not await live.checkpoint_live("g:1", record.number, peak_viewers=99, total_viewers=99)
    assert await live.get_live("g:1", record.number) == ended
    assert not await live.add_live_links("g:8", 1, groups=["g:2"])
    assert not await live.add_live_invites("g:8", 1, users=[4])
    assert not await live.checkpoint_live("g:8", 1, peak_viewers=1, total_viewers=1)
    assert (
        await live.end_live("g:8", 1, ended_at=NOW, reason="host", peak_viewers=0, total_viewers=0)
        is None
    )
    assert await live.get_live("g:8", 1) is None


async def test_l1_active_lives_lists_only_active_streams_oldest_first(stores: Stores) -> None:
    live = stores.live
    later = await live.start_live(
        NewLive(
            origin="g:2",
            host=2,
            host_device=20,
            title="later",
            description="",
            started_at=NOW + 5,
        )
    )
    first = await live.start_live(new_live("g:3"))
    gone = await live.start_live(new_live("g:4"))
    await end(live, gone)
    await live.add_live_invites("g:3", first.number, users=[9])
    active = await live.active_lives()
    assert [(r.origin, r.number) for r in active] == [("g:3", 1), ("g:2", 1)]
    assert active[0].invited == (9,) and active[1] == later


async def test_l1_sqlite_records_survive_reopening(tmp_path: Path) -> None:
    from storage.sqlite import open_sqlite_stores

    async with open_sqlite_stores(tmp_path / "data") as stores:
        record = await stores.live.start_live(new_live(links=("g:2",)))
        await stores.live.add_live_invites("g:1", record.number, users=[4])
        await stores.live.checkpoint_live("g:1", record.number, peak_viewers=3, total_viewers=4)
    async with open_sqlite_stores(tmp_path / "data") as stores:
        (active,) = await stores.live.active_lives()
        assert (active.origin, active.number, active.links, active.invited) == (
            "g:1",
            1,
            ("g:2",),
            (4,),
        )
        assert (active.peak_viewers, active.total_viewers) == (3, 4)


async def test_o4_delete_lives_by_origin_prefix_in_batches(stores: Stores) -> None:
    """Dissolution deletes the records of streams started in an organisation's own groups
    (``o:7:...``), with their links and invitations; ``o:70:...`` and others stay."""
    store = stores.org_live
    for origin in ("o:7:g:1", "o:7:g:1", "o:7:g:2", "o:70:g:1"):
        record = await store.start_live(new_live(origin, links=(origin.replace("g:", "g:9"),)))
        await store.add_live_invites(record.origin, record.number, users=[4, 5])
    batches = []
    while (gone := await store.delete_lives("o:7:", limit=2)) > 0:
        batches.append(gone)
    assert batches == [2, 1]
    assert await store.get_live("o:7:g:1", 1) is None
    assert await store.get_live("o:7:g:2", 1) is None
    kept = await store.get_live("o:70:g:1", 1)
    assert kept is not None and kept.invited == (4, 5)
    assert [r.origin for r in await store.active_lives()] == ["o:70:g:1"]
