"""The live-stream machinery without a network (L1): registry, coalesced counts, grace timers,
restore and checkpoints. Time is trio's ``MockClock`` (``autojump_clock``); connections are
never written to a socket: tests read their send queues.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from server.clock import ManualClock
from server.connection import Connection
from server.live import LiveRegistry, LiveRuntime, LiveStream
from server.live.grace import GraceTimers
from server.live.throttle import CountsThrottle
from storage.live import NewLive
from storage.memory import open_memory_stores
from storage.stores import Stores
from tests.server import routers
from tests.server.routers import frames

_devices = itertools.count(100)


def connect(user: int) -> Connection:
    conn = routers.connect(4096)
    conn.user_id = user
    conn.device_id = next(_devices)
    return conn


def stream(origin: str = "g:1", number: int = 1, host: int = 1) -> LiveStream:
    return LiveStream(
        origin=origin,
        number=number,
        host=host,
        host_device=1,
        title="t",
        description="",
        started_at=0,
    )


def live_stream(registry: LiveRegistry, host: Connection, origin: str = "g:1") -> LiveStream:
    s = stream(origin, host=host.user_id or 0)
    registry.add(s)
    registry.set_host(s, host)
    return s


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    async with open_memory_stores() as opened:
        yield opened


def runtime(stores: Stores, **overrides: Any) -> LiveRuntime:
    settings: dict[str, Any] = {
        "clock": ManualClock(),
        "max_cohosts": 4,
        "grace_seconds": 60.0,
        "counts_seconds": 1.0,
        "checkpoint_seconds": 10.0,
    }
    settings.update(overrides)
    return LiveRuntime(stores, **settings)


# --- the registry ---------------------------------------------------------------------------------


def test_l1_a_group_has_one_stream_and_claims_cover_a_start_in_progress() -> None:
    registry = LiveRegistry()
    host = connect(1)
    s = live_stream(registry, host)
    registry.link(s, ["g:2", "g:1", "g:2"])
    assert s.groups == ["g:1", "g:2"]
    assert registry.active_in("g:2") is s and registry.get("g:1/1") is s
    registry.claim(["g:3"])
    assert registry.taken(["g:1", "g:2", "g:3", "g:4"]) == ["g:1", "g:2", "g:3"]
    registry.unclaim(["g:3"])
    registry.discard(s)
    assert s.ended and registry.get("g:1/1") is None
    assert registry.taken(["g:1", "g:2"]) == []


def test_l1_viewers_count_users_not_connections_and_page_by_user_id() -> None:
    registry = LiveRegistry()
    s = live_stream(registry, connect(1))
    phone, laptop = connect(7), connect(7)
    assert registry.join(s, phone) is True
    assert registry.join(s, laptop) is False
    for user in (9, 3, 5):
        registry.join(s, connect(user))
    assert s.viewer_count == 4 and s.peak == 4 and s.total_viewers == 4
    assert s.viewer_page(after=0, limit=2) == [3, 5]
    assert s.viewer_page(after=5, limit=2) == [7, 9]
    assert s.viewer_page(after=9, limit=2) == []
    assert s.role_of(phone) == "viewer" and s.device_conn(laptop.device_id or 0) is laptop
    departure = registry.leave(s, phone)
    assert departure is not None and not departure.last and s.viewer_count == 4
    departure = registry.leave(s, laptop)
    assert departure is not None and departure.last
    assert s.viewer_count == 3 and s.peak == 4 and s.total_viewers == 4
    assert s.device_conn(laptop.device_id or 0) is None and s.role_of(laptop) is None
    registry.join(s, connect(7))  # back again: still one distinct viewer
    assert s.total_viewers == 4


def test_l1_a_closed_connection_leaves_every_stream_it_was_in() -> None:
    registry = LiveRegistry()
    first = live_stream(registry, connect(1), "g:1")
    second = live_stream(registry, connect(2), "g:2")
    viewer = connect(5)
    registry.join(first, viewer)
    registry.join(second, viewer)
    registry.raise_hand(first, viewer, raised=True)
    left = registry.connection_closed(viewer)
    assert {s.live_id for s, _ in left} == {"g:1/1", "g:2/1"}
    assert all(d.role == "viewer" and d.last for _, d in left)
    assert [d.hand for s, d in left if s is first] == [True]
    assert first.viewer_count == 0 and second.viewer_count == 0 and not first.hands
    assert registry.connection_closed(viewer) == []


def test_l1_hands_cohosts_and_removal() -> None:
    registry = LiveRegistry()
    s = live_stream(registry, connect(1))
    bob, carol = connect(2), connect(3)
    registry.join(s, bob)
    registry.join(s, carol)
    assert registry.raise_hand(s, bob, raised=True)
    assert not registry.raise_hand(s, bob, raised=True)  # already raised
    assert registry.answer_hand(s, 2, accept=True) is bob
    assert s.role_of(bob) == "cohost" and not s.hands
    assert [(u, r) for u, _, r in s.stage()] == [(1, "host"), (2, "cohost")]
    assert registry.step_down(s, 2) is bob and s.role_of(bob) == "viewer"
    departures = registry.remove_user(s, 3)
    assert [d.user for d in departures] == [3] and 3 in s.removed
    assert s.viewer_count == 1


def test_l1_a_new_host_connection_replaces_the_old_one() -> None:
    registry = LiveRegistry()
    old = connect(1)
    s = live_stream(registry, old)
    new = connect(1)
    registry.set_host(s, new)
    assert s.role_of(new) == "host" and s.role_of(old) is None
    assert s.host_device == new.device_id
    assert registry.connection_closed(old) == []
    ((closed, departure),) = registry.connection_closed(new)
    assert closed is s and departure.role == "host" and s.host_conn is None


# --- coalesced counts ----------------------------------------------------------------------------


def test_l1_joins_and_likes_coalesce_into_one_event_per_flush() -> None:
    registry = LiveRegistry()
    host = connect(1)
    s = live_stream(registry, host)
    throttle = CountsThrottle(registry, interval=1.0)
    viewers = [connect(u) for u in range(10, 60)]
    for viewer in viewers:
        registry.join(s, viewer)
    registry.like(s, 3)
    registry.like(s, 2)
    assert throttle.flush() == 1
    assert frames(host) == [
        {"op": "ev.live.counts", "live_id": "g:1/1", "viewers": 50, "likes": 5, "total_likes": 5}
    ]
    assert all(len(frames(v)) == 1 for v in viewers)
    assert throttle.flush() == 0  # nothing changed, nothing sent
    registry.like(s, 1)
    throttle.flush()
    assert frames(host)[0]["likes"] == 1 and throttle.statistics()["events"] == 2


async def test_l1_one_task_sends_at_most_one_count_per_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = LiveRegistry()
    host = connect(1)
    s = live_stream(registry, host)
    other_host = connect(2)
    other = live_stream(registry, other_host, "g:2")
    throttle = CountsThrottle(registry, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(throttle.run)
        began = trio.current_time()
        # 200 joins over 5 seconds to two streams.
        for user in range(100, 300):
            registry.join(s if user % 2 else other, connect(user))
            await trio.sleep(0.025)
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    seconds = trio.current_time() - began
    for conn, expected in ((host, 100), (other_host, 100)):
        got = frames(conn)
        assert len(got) <= seconds + 1
        assert got[-1]["viewers"] == expected
    assert other.viewer_count == 100


# --- grace timers ---------------------------------------------------------------------------------


async def test_l1_grace_timers_expire_in_deadline_order_and_honour_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timers = GraceTimers()
    expired: list[tuple[str, float]] = []

    async def expire(key: str) -> None:
        expired.append((key, trio.current_time()))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run, expire)
        timers.arm("b", start + 20)
        timers.arm("a", start + 10)
        timers.arm("c", start + 30)
        timers.cancel("c")
        await trio.sleep(15)
        timers.arm("b", start + 40)  # re-armed: the first deadline no longer counts
        timers.arm("d", start + 18)  # nearer than anything armed: wakes the runner
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert [(k, round(t - start, 6)) for k, t in expired] == [("a", 10), ("d", 18), ("b", 40)]
    assert timers.statistics()["armed"] == 0 and timers.next_deadline() is None


async def test_l1_a_failing_expiry_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timers = GraceTimers()
    done: list[str] = []

    async def expire(key: str) -> None:
        if key == "bad":
            raise RuntimeError("disk full")
        done.append(key)

    async with trio.open_nursery() as nursery:
        await nursery.start(timers.run, expire)
        timers.arm("bad", trio.current_time() + 1)
        timers.arm("good", trio.current_time() + 2)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert done == ["good"] and timers.expired == 2


# --- the runtime: disconnects, restore, checkpoints -----------------------------------------------


async def test_l1_host_disconnect_arms_grace_and_resume_cancels_it(stores: Stores) -> None:
    live = runtime(stores, grace_seconds=60.0)
    host, viewer = connect(1), connect(2)
    s = live_stream(live.registry, host)
    live.registry.join(s, viewer)
    frames(viewer)
    live.connection_closed(host)
    assert s.host_conn is None
    assert live.grace.deadline(s.live_id) == pytest.approx(trio.current_time() + 60.0)
    (away,) = frames(viewer)
    assert away["op"] == "ev.live.host" and away["online"] is False
    assert away["resume_by"] == live.clock.now_ms() + 60_000
    back = connect(1)
    live.host_back(s, back)
    assert live.grace.deadline(s.live_id) is None and s.role_of(back) == "host"
    (returned,) = frames(viewer)
    assert (returned["online"], returned["device"]) == (True, back.device_id)


async def test_l1_a_leaving_cohost_and_a_withdrawn_hand_are_announced(stores: Stores) -> None:
    live = runtime(stores)
    host, bob, carol = connect(1), connect(2), connect(3)
    s = live_stream(live.registry, host)
    for conn in (bob, carol):
        live.registry.join(s, conn)
    live.registry.raise_hand(s, bob, raised=True)
    live.registry.answer_hand(s, 2, accept=True)
    live.registry.raise_hand(s, carol, raised=True)
    live.connection_closed(bob)
    live.connection_closed(carol)
    ops = [(f["op"], f["user"]) for f in frames(host)]
    assert ops == [("ev.live.cohost", 2), ("ev.live.hand", 3)]


async def test_l1_restore_puts_recorded_streams_into_grace(
    stores: Stores, autojump_clock: trio.testing.MockClock
) -> None:
    record = await stores.live.start_live(
        NewLive(origin="g:4", host=1, host_device=9, title="t", description="d", started_at=5)
    )
    await stores.live.add_live_links("g:4", record.number, groups=["g:5"])
    await stores.live.checkpoint_live("g:4", record.number, peak_viewers=7, total_viewers=11)
    ended = await stores.live.start_live(
        NewLive(origin="g:6", host=1, host_device=9, title="t", description="", started_at=6)
    )
    await stores.live.end_live(
        "g:6", ended.number, ended_at=7, reason="host", peak_viewers=0, total_viewers=0
    )
    live = runtime(stores, grace_seconds=30.0)
    expired: list[str] = []

    async def expire(live_id: str) -> None:
        expired.append(live_id)

    async with trio.open_nursery() as nursery:
        await nursery.start(live.run, expire)
        s = live.registry.get("g:4/1")
        assert s is not None and s.host_conn is None and s.groups == ["g:4", "g:5"]
        assert (s.peak, s.total_viewers) == (7, 11)
        assert live.registry.active_in("g:5") is s and live.registry.get("g:6/1") is None
        await trio.sleep(29)
        assert expired == []
        await trio.sleep(2)
        assert expired == ["g:4/1"]
        nursery.cancel_scope.cancel()


async def test_l1_checkpoints_store_viewer_figures_that_moved(
    stores: Stores, autojump_clock: trio.testing.MockClock
) -> None:
    record = await stores.live.start_live(
        NewLive(origin="g:1", host=1, host_device=9, title="t", description="", started_at=5)
    )
    live = runtime(stores, checkpoint_seconds=10.0)

    async def expire(live_id: str) -> None:
        raise AssertionError("nothing expires here")

    async with trio.open_nursery() as nursery:
        await nursery.start(live.run, expire)
        s = live.registry.get("g:1/1")
        assert s is not None
        live.host_back(s, connect(1))
        for user in (2, 3, 4):
            live.registry.join(s, connect(user))
        await trio.sleep(11)
        stored = await stores.live.get_live("g:1", record.number)
        assert stored is not None and (stored.peak_viewers, stored.total_viewers) == (3, 3)
        assert s.checkpointed == (3, 3)
        nursery.cancel_scope.cancel()


async def test_l1_member_views_follow_the_member_cache_tuple(stores: Stores) -> None:
    live = runtime(stores)
    ids = (1, 2, 3)
    view = live.member_view("g:1", ids)
    assert view == {1, 2, 3} and live.member_view("g:1", ids) is view
    fresh = live.member_view("g:1", (1, 2, 3, 4))  # the cache was invalidated: a new tuple
    assert fresh == {1, 2, 3, 4} and fresh is not view
