"""Group live streams over the real WebSocket (L1), on the memory and the SQLite stores.

Covers the lifecycle (start, join, counts, likes, viewer pages, end and the stored record),
permissions (members of linked groups and invited users only, mute-all, who may end),
throttled counts under a join storm, the co-host flow and its maximum, the WebRTC relay
only between participants of the same stream, the host's grace period after a disconnect
(resumed, and expired), and a server restart that puts live streams into that grace period.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from client import ClientState, RivetClient
from client.connection import RivetError
from protocol import limits, replies
from protocol import live as pl
from protocol import requests as rq
from protocol.errors import ErrorCode
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config

E = TypeVar("E")
_cmids = itertools.count(1)

#: Short intervals so the tests run in real time within seconds.
COUNTS_SECONDS = 0.25
GRACE_SECONDS = 1.5


@pytest.fixture(params=["memory", "sqlite"])
async def harness(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
) -> AsyncIterator[Harness]:
    notifier = MemoryNotifier()
    config = make_config(
        tmp_path,
        store=request.param,
        live_counts_seconds=COUNTS_SECONDS,
        live_grace_seconds=GRACE_SECONDS,
        live_max_cohosts=2,
    )
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    yield Harness(running, notifier)
    running.shutdown()


# --- helpers ----------------------------------------------------------------------------------


async def next_of(
    client: RivetClient,
    kind: type[E],
    match: Callable[[E], bool] = lambda _: True,
    *,
    within: float = 5,
) -> E:
    """The next pushed event of ``kind`` that ``match``es within ``within`` seconds."""
    with trio.fail_after(within):
        while True:
            event = await client.next_event()
            if isinstance(event, kind) and match(event):
                return event


def drain(client: RivetClient, kind: type[E]) -> list[E]:
    """Every event of ``kind`` already received, without waiting."""
    found = []
    while True:
        try:
            event = client.conn.events.receive_nowait()
        except trio.WouldBlock:
            return found
        if isinstance(event, kind):
            found.append(event)


async def refused(client: RivetClient, request: rq.Request) -> int:
    with pytest.raises(RivetError) as caught:
        await client.request(request)
    return caught.value.code


async def users(harness: Harness, count: int) -> list[ClientState]:
    found: dict[int, ClientState] = {}

    async def one(index: int) -> None:
        found[index] = await harness.new_user(f"user{index}")

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return [found[i] for i in range(count)]


def uid(state: ClientState) -> int:
    assert state.user_id is not None
    return state.user_id


def did(state: ClientState) -> int:
    assert state.device_id is not None
    return state.device_id


async def group(client: RivetClient, members: list[ClientState], **fields: Any) -> str:
    created: replies.GroupCreated = await client.request(
        rq.GroupCreate(
            rid=0,
            cmid=f"live-{next(_cmids)}",
            title="team",
            members=[uid(m) for m in members],
            **fields,
        )
    )
    return created.conv.conv


async def go_live(client: RivetClient, conv: str, **fields: Any) -> pl.LiveJoined:
    started: pl.LiveJoined = await client.request(
        pl.LiveStart(rid=0, conv=conv, title=fields.pop("title", "launch"), **fields)
    )
    return started


async def join(client: RivetClient, live_id: str) -> pl.LiveJoined:
    joined: pl.LiveJoined = await client.request(pl.LiveJoin(rid=0, live_id=live_id))
    return joined


async def counts_until(
    client: RivetClient, live_id: str, done: Callable[[pl.LiveCountsEvent], bool]
) -> pl.LiveCountsEvent:
    return await next_of(client, pl.LiveCountsEvent, lambda e: e.live_id == live_id and done(e))


# --- lifecycle ----------------------------------------------------------------------------------


async def test_l1_lifecycle_start_join_counts_likes_page_end_and_record(harness: Harness) -> None:
    alice, bob, carol = await users(harness, 3)
    async with (
        RivetClient.connect(harness.url, alice) as a,
        RivetClient.connect(harness.url, bob) as b,
        RivetClient.connect(harness.url, carol) as c,
    ):
        conv = await group(a, [bob, carol])
        started = await go_live(a, conv, title="Launch day", description="countdown")
        live_id = started.live.live_id
        assert live_id == f"{conv}/1"
        assert started.role == "host" and started.viewers == 0 and started.hands == []
        assert [(s.user, s.device, s.role) for s in started.stage] == [
            (uid(alice), did(alice), "host")
        ]
        announced = await next_of(b, pl.LiveStartedEvent)
        assert announced.live == started.live and announced.live.groups == [conv]
        assert announced.live.description == "countdown" and announced.live.host_online
        active: pl.LiveState = await c.request(pl.LiveActive(rid=0, conv=conv))
        assert active.live == started.live

        joined = await join(b, live_id)
        assert joined.role == "viewer" and joined.viewers == 1 and joined.hands == []
        assert [(s.user, s.device) for s in joined.stage] == [(uid(alice), did(alice))]
        await join(c, live_id)
        counted = await counts_until(a, live_id, lambda e: e.viewers == 2)
        assert counted.total_likes == 0

        await b.request(pl.LiveLike(rid=0, live_id=live_id, count=3))
        await c.request(pl.LiveLike(rid=0, live_id=live_id))
        liked = await counts_until(c, live_id, lambda e: e.total_likes == 4)
        assert liked.viewers == 2 and 1 <= liked.likes <= 4

        low, high = sorted([uid(bob), uid(carol)])
        page: pl.LiveViewerPage = await b.request(pl.LiveViewers(rid=0, live_id=live_id, limit=1))
        assert page.viewers == [low] and page.next_after == low
        rest: pl.LiveViewerPage = await b.request(
            pl.LiveViewers(rid=0, live_id=live_id, after=low, limit=1)
        )
        assert rest.viewers == [high] and rest.next_after == high
        last: pl.LiveViewerPage = await b.request(
            pl.LiveViewers(rid=0, live_id=live_id, after=high)
        )
        assert last.viewers == [] and last.next_after is None

        await c.request(pl.LiveLeave(rid=0, live_id=live_id))
        assert (await counts_until(a, live_id, lambda e: e.viewers == 1)).viewers == 1
        assert await refused(c, pl.LiveLike(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND

        summary: pl.LiveSummary = await a.request(pl.LiveEnd(rid=0, live_id=live_id))
        assert (summary.reason, summary.peak_viewers, summary.total_viewers) == ("host", 2, 2)
        for client in (b, c):
            ended = await next_of(client, pl.LiveEndedEvent)
            assert (ended.live_id, ended.reason, ended.ended_at) == (
                live_id,
                "host",
                summary.ended_at,
            )
        assert (await c.request(pl.LiveActive(rid=0, conv=conv))).live is None
        assert await refused(b, pl.LiveJoin(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
        assert await refused(a, pl.LiveEnd(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND

    origin, number = pl.parse_live_id(live_id)
    record = await harness.server.ctx.stores.live.get_live(origin, number)
    assert record is not None and record.host == uid(alice) and record.links == ()
    assert (record.ended_at, record.end_reason) == (summary.ended_at, "host")
    assert (record.peak_viewers, record.total_viewers) == (2, 2)
    assert record.started_at == started.live.started_at

    # A new stream in the same group gets the next number.
    async with RivetClient.connect(harness.url, alice) as a:
        again = await go_live(a, conv)
        assert again.live.live_id == f"{conv}/2"


async def test_l1_linked_groups_and_invited_users_may_watch(harness: Harness) -> None:
    alice, bob, carol, dave, erin = await users(harness, 5)
    async with AsyncExitStack() as stack:
        a, b, c, d, e = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s))
            for s in (alice, bob, carol, dave, erin)
        ]
        main = await group(a, [bob])
        other = await group(a, [carol])
        elsewhere = await group(d, [alice, erin])
        started = await go_live(a, main, link_groups=[other])
        live_id = started.live.live_id
        assert started.live.groups == [main, other]
        assert (await next_of(c, pl.LiveStartedEvent)).live.live_id == live_id
        await join(c, live_id)  # a member of a linked group
        # Dave is in no group of the stream: for him it does not exist.
        assert await refused(d, pl.LiveJoin(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
        assert await refused(d, pl.LiveEnd(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
        assert await refused(d, pl.LiveActive(rid=0, conv=main)) == ErrorCode.NOT_FOUND
        assert await refused(d, pl.LiveJoin(rid=0, live_id=f"{main}/9")) == ErrorCode.NOT_FOUND
        # Linking: only the host, and it reaches the new group's members.
        assert (
            await refused(c, pl.LiveLink(rid=0, live_id=live_id, groups=[elsewhere]))
            == ErrorCode.FORBIDDEN
        )
        linked: pl.LiveState = await a.request(
            pl.LiveLink(rid=0, live_id=live_id, groups=[elsewhere, main])
        )
        assert linked.live is not None and linked.live.groups == [main, other, elsewhere]
        assert (await next_of(e, pl.LiveStartedEvent)).live.groups == [main, other, elsewhere]
        active: pl.LiveState = await e.request(pl.LiveActive(rid=0, conv=elsewhere))
        assert active.live is not None and active.live.live_id == live_id
        await join(e, live_id)
        # A group has one active stream: its members cannot start another.
        assert await refused(b, pl.LiveStart(rid=0, conv=main, title="x")) == (
            ErrorCode.LIVE_IN_PROGRESS
        )
        assert await refused(d, pl.LiveStart(rid=0, conv=elsewhere, title="x")) == (
            ErrorCode.LIVE_IN_PROGRESS
        )
        # Invitations: an outsider may watch once invited.
        outsider = (await users(harness, 1))[0]
        async with RivetClient.connect(harness.url, outsider) as o:
            assert await refused(o, pl.LiveJoin(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
            assert (
                await refused(b, pl.LiveInvite(rid=0, live_id=live_id, users=[uid(outsider)]))
                == ErrorCode.FORBIDDEN
            )
            await a.request(pl.LiveInvite(rid=0, live_id=live_id, users=[uid(outsider)]))
            invited = await next_of(o, pl.LiveInvitedEvent)
            assert invited.live.live_id == live_id
            assert (await join(o, live_id)).role == "viewer"
        await a.request(pl.LiveEnd(rid=0, live_id=live_id))

    origin, number = pl.parse_live_id(live_id)
    record = await harness.server.ctx.stores.live.get_live(origin, number)
    assert record is not None
    assert record.links == (other, elsewhere) and record.invited == (uid(outsider),)
    assert record.total_viewers == 3


async def test_l1_mute_all_leaves_going_live_to_owner_and_admins(harness: Harness) -> None:
    owner, admin, member = await users(harness, 3)
    async with AsyncExitStack() as stack:
        o, a, m = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s))
            for s in (owner, admin, member)
        ]
        conv = await group(o, [admin, member])
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin), role="admin"))
        await o.request(rq.GroupMuteAll(rid=0, conv=conv, muted=True))
        assert await refused(m, pl.LiveStart(rid=0, conv=conv, title="x")) == ErrorCode.MUTED
        started = await go_live(a, conv)
        await a.request(pl.LiveEnd(rid=0, live_id=started.live.live_id))
        await o.request(rq.GroupMuteAll(rid=0, conv=conv, muted=False))
        await o.request(rq.GroupMuteMember(rid=0, conv=conv, user=uid(member), muted=True))
        assert await refused(m, pl.LiveStart(rid=0, conv=conv, title="x")) == ErrorCode.MUTED
        # Not a group, or not a member: not found.
        assert await refused(m, pl.LiveStart(rid=0, conv=f"s:{uid(member)}", title="x")) == (
            ErrorCode.NOT_FOUND
        )
        assert await refused(m, pl.LiveStart(rid=0, conv="g:999", title="x")) == (
            ErrorCode.NOT_FOUND
        )


async def test_l1_only_the_host_or_the_groups_owner_and_admins_end(harness: Harness) -> None:
    owner, admin, host, viewer = await users(harness, 4)
    async with AsyncExitStack() as stack:
        o, a, h, v = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s))
            for s in (owner, admin, host, viewer)
        ]
        conv = await group(o, [admin, host, viewer])
        await o.request(rq.GroupSetRole(rid=0, conv=conv, user=uid(admin), role="admin"))
        first = (await go_live(h, conv)).live.live_id
        await join(v, first)
        assert await refused(v, pl.LiveEnd(rid=0, live_id=first)) == ErrorCode.FORBIDDEN
        by_admin: pl.LiveSummary = await a.request(pl.LiveEnd(rid=0, live_id=first))
        assert by_admin.reason == "admin"
        assert (await next_of(h, pl.LiveEndedEvent)).reason == "admin"
        second = (await go_live(h, conv)).live.live_id
        assert second == f"{conv}/2"
        by_owner: pl.LiveSummary = await o.request(pl.LiveEnd(rid=0, live_id=second))
        assert by_owner.reason == "admin"


# --- throttled counts -------------------------------------------------------------------------


async def test_l1_join_storm_gives_each_participant_coalesced_counts(harness: Harness) -> None:
    host, *viewers = await users(harness, 31)
    async with AsyncExitStack() as stack:
        h = await stack.enter_async_context(RivetClient.connect(harness.url, host))
        conv = await group(h, viewers)
        clients = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s)) for s in viewers
        ]
        live_id = (await go_live(h, conv)).live.live_id
        drain(clients[0], pl.LiveCountsEvent)

        async def join_one(client: RivetClient) -> None:
            await join(client, live_id)

        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(join_one, client)
        storm = trio.current_time() - began
        assert storm < 0.5, f"30 joins took {storm:.2f} s"
        final = await counts_until(h, live_id, lambda e: e.viewers == 30)
        await trio.sleep(COUNTS_SECONDS * 3)  # nothing changes: nothing more is sent
        elapsed = trio.current_time() - began
        allowed = int(elapsed / COUNTS_SECONDS) + 2
        host_counts = [final, *drain(h, pl.LiveCountsEvent)]
        first_viewer = drain(clients[0], pl.LiveCountsEvent)
        assert len(host_counts) <= allowed and len(first_viewer) <= allowed
        assert len(host_counts) < 30 and len(first_viewer) < 30  # never an event per join
        assert host_counts[-1].viewers == 30 and first_viewer[-1].viewers == 30
        assert all(e.live_id == live_id for e in host_counts + first_viewer)
        # Likes are added up, not relayed one by one.
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.request, pl.LiveLike(rid=0, live_id=live_id, count=2))
        liked = await counts_until(h, live_id, lambda e: e.total_likes == 60)
        assert liked.viewers == 30
        assert len(drain(h, pl.LiveCountsEvent)) <= 2


# --- co-hosts ----------------------------------------------------------------------------------


async def test_l1_cohost_flow_with_the_maximum(harness: Harness) -> None:
    host, bob, carol, dave = await users(harness, 4)
    async with AsyncExitStack() as stack:
        h, b, c, d = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s))
            for s in (host, bob, carol, dave)
        ]
        conv = await group(h, [bob, carol, dave])
        live_id = (await go_live(h, conv)).live.live_id
        for client in (b, c, d):
            await join(client, live_id)
        assert await refused(h, pl.LiveRaiseHand(rid=0, live_id=live_id)) == (
            ErrorCode.INVALID_STATE
        )
        for client, state in ((b, bob), (c, carol), (d, dave)):
            await client.request(pl.LiveRaiseHand(rid=0, live_id=live_id))
            hand = await next_of(h, pl.LiveHandEvent, lambda e, s=state: e.user == uid(s))
            assert hand.raised and hand.device == did(state)
        # Bob is not the host: he answers nothing.
        assert (
            await refused(
                b, pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(carol), accept=True)
            )
            == ErrorCode.FORBIDDEN
        )
        for state in (bob, carol):
            await h.request(pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(state), accept=True))
            for client in (h, b, c, d):
                on = await next_of(client, pl.LiveCohostEvent, lambda e, s=state: e.user == uid(s))
                assert on.cohost and on.device == did(state)
        # The maximum here is 2 (live_max_cohosts).
        assert (
            await refused(h, pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(dave), accept=True))
            == ErrorCode.COHOST_LIMIT
        )
        await h.request(pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(dave), accept=False))
        declined = await next_of(d, pl.LiveHandEvent)
        assert (declined.user, declined.raised) == (uid(dave), False)
        assert (
            await refused(h, pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(dave), accept=True))
            == ErrorCode.INVALID_STATE
        )
        resumed: pl.LiveJoined = await h.request(pl.LiveResume(rid=0, live_id=live_id))
        assert [(s.user, s.role) for s in resumed.stage] == [
            (uid(host), "host"),
            *((u, "cohost") for u in sorted([uid(bob), uid(carol)])),
        ]
        assert (await join(b, live_id)).role == "cohost"
        assert await refused(b, pl.LiveRaiseHand(rid=0, live_id=live_id)) == (
            ErrorCode.INVALID_STATE
        )

        # Removing a co-host takes them off the stage; they keep watching.
        await h.request(pl.LiveRemove(rid=0, live_id=live_id, user=uid(carol)))
        off = await next_of(d, pl.LiveCohostEvent, lambda e: e.user == uid(carol))
        assert not off.cohost
        page: pl.LiveViewerPage = await h.request(pl.LiveViewers(rid=0, live_id=live_id))
        assert page.viewers == sorted([uid(bob), uid(carol), uid(dave)])
        # Removing a viewer removes them from the stream, for good unless invited again.
        await h.request(pl.LiveRemove(rid=0, live_id=live_id, user=uid(dave)))
        assert (await next_of(d, pl.LiveRemovedEvent)).live_id == live_id
        assert await refused(d, pl.LiveJoin(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
        assert await refused(d, pl.LiveLike(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
        assert (
            await refused(h, pl.LiveRemove(rid=0, live_id=live_id, user=uid(dave)))
            == ErrorCode.NOT_FOUND
        )
        assert (
            await refused(h, pl.LiveRemove(rid=0, live_id=live_id, user=uid(host)))
            == ErrorCode.INVALID_STATE
        )
        await h.request(pl.LiveInvite(rid=0, live_id=live_id, users=[uid(dave)]))
        assert (await join(d, live_id)).role == "viewer"
        # A co-host who leaves leaves the stage.
        await b.request(pl.LiveLeave(rid=0, live_id=live_id))
        gone = await next_of(c, pl.LiveCohostEvent, lambda e: e.user == uid(bob))
        assert not gone.cohost


# --- the relay ---------------------------------------------------------------------------------


async def test_l1_signals_are_relayed_only_between_participants(harness: Harness) -> None:
    host, bob, carol, dave = await users(harness, 4)
    async with AsyncExitStack() as stack:
        h, b, c, d = [
            await stack.enter_async_context(RivetClient.connect(harness.url, s))
            for s in (host, bob, carol, dave)
        ]
        conv = await group(h, [bob, carol, dave])
        live_id = (await go_live(h, conv)).live.live_id
        await join(b, live_id)
        await join(c, live_id)
        offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"

        def signal(to: ClientState, kind: pl.SignalKind = "offer", payload: str = offer) -> Any:
            return pl.LiveSignal(
                rid=0, live_id=live_id, to_device=did(to), kind=kind, payload=payload
            )

        await b.request(signal(host))
        got = await next_of(h, pl.LiveSignalEvent)
        assert (got.live_id, got.from_user, got.from_device, got.kind, got.payload) == (
            live_id,
            uid(bob),
            did(bob),
            "offer",
            offer,
        )
        await h.request(signal(bob, "answer", "v=0 answer"))
        answer = await next_of(b, pl.LiveSignalEvent)
        assert (answer.from_device, answer.kind, answer.payload) == (
            did(host),
            "answer",
            "v=0 answer",
        )
        await b.request(signal(host, "ice", "candidate:1 1 udp 2122260223 10.0.0.2 54400 typ host"))
        assert (await next_of(h, pl.LiveSignalEvent)).kind == "ice"

        not_found = ErrorCode.NOT_FOUND
        assert await refused(b, signal(carol)) == not_found  # viewer to viewer
        assert await refused(b, signal(dave)) == not_found  # a member who is not watching
        assert await refused(b, signal(bob)) == not_found  # its own device
        assert await refused(d, signal(host)) == not_found  # a sender who is not watching
        assert (
            await refused(
                b,
                pl.LiveSignal(
                    rid=0, live_id=f"{conv}/7", to_device=did(host), kind="offer", payload=offer
                ),
            )
            == not_found
        )
        # A second stream's participant is no target of this one.
        other = await group(d, [carol])
        other_live = (await go_live(d, other)).live.live_id
        await join(c, other_live)
        assert await refused(h, signal(dave)) == not_found
        # Size-limited: over MAX_SIGNAL_CHARS is refused at decode.
        with pytest.raises(RivetError) as caught:
            await b.request(signal(host, payload="a" * (limits.MAX_SIGNAL_CHARS + 1)))
        assert (caught.value.code, caught.value.path) == (ErrorCode.TOO_LARGE, "$.payload")
        await b.request(signal(host, payload="a" * limits.MAX_SIGNAL_CHARS))
        assert len((await next_of(h, pl.LiveSignalEvent)).payload) == limits.MAX_SIGNAL_CHARS
        # Only the host and co-hosts talk to viewers: after Carol goes on stage Bob may.
        await c.request(pl.LiveRaiseHand(rid=0, live_id=live_id))
        await h.request(pl.LiveAnswerHand(rid=0, live_id=live_id, user=uid(carol), accept=True))
        await b.request(signal(carol))
        relayed = await next_of(c, pl.LiveSignalEvent, lambda e: e.live_id == live_id)
        assert relayed.from_user == uid(bob)
        # Nothing of the relay is kept: no conversation saw it.
        history: replies.History = await h.request(rq.MsgHistory(rid=0, conv=conv))
        assert all(m.system is not None for m in history.messages)


# --- the host's grace period ----------------------------------------------------------------


async def test_l1_host_disconnect_then_resume_within_grace(harness: Harness) -> None:
    host, viewer = await users(harness, 2)
    async with RivetClient.connect(harness.url, viewer) as v:
        async with RivetClient.connect(harness.url, host) as h:
            conv = await group(h, [viewer])
            live_id = (await go_live(h, conv)).live.live_id
            await join(v, live_id)
        away = await next_of(v, pl.LiveHostEvent)
        assert (away.online, away.device) == (False, None)
        assert away.resume_by is not None
        active: pl.LiveState = await v.request(pl.LiveActive(rid=0, conv=conv))
        assert active.live is not None and not active.live.host_online
        assert await refused(v, pl.LiveResume(rid=0, live_id=live_id)) == ErrorCode.FORBIDDEN
        await trio.sleep(GRACE_SECONDS / 3)
        async with RivetClient.connect(harness.url, host) as h:
            resumed: pl.LiveJoined = await h.request(pl.LiveResume(rid=0, live_id=live_id))
            assert resumed.role == "host" and resumed.live.host_online and resumed.viewers == 1
            back = await next_of(v, pl.LiveHostEvent)
            assert (back.online, back.device, back.resume_by) == (True, did(host), None)
            await trio.sleep(GRACE_SECONDS * 1.5)  # well past the first deadline
            still: pl.LiveState = await v.request(pl.LiveActive(rid=0, conv=conv))
            assert still.live is not None and still.live.host_online
            assert not drain(v, pl.LiveEndedEvent)
            await h.request(pl.LiveEnd(rid=0, live_id=live_id))


async def test_l1_host_disconnect_past_grace_ends_the_stream(harness: Harness) -> None:
    host, viewer = await users(harness, 2)
    async with RivetClient.connect(harness.url, viewer) as v:
        async with RivetClient.connect(harness.url, host) as h:
            conv = await group(h, [viewer])
            live_id = (await go_live(h, conv)).live.live_id
            await join(v, live_id)
        began = trio.current_time()
        ended = await next_of(v, pl.LiveEndedEvent, within=GRACE_SECONDS + 5)
        assert trio.current_time() - began >= GRACE_SECONDS * 0.9
        assert (ended.live_id, ended.reason, ended.peak_viewers, ended.total_viewers) == (
            live_id,
            "host_left",
            1,
            1,
        )
        async with RivetClient.connect(harness.url, host) as h:
            assert await refused(h, pl.LiveResume(rid=0, live_id=live_id)) == ErrorCode.NOT_FOUND
            assert (await go_live(h, conv)).live.live_id == f"{conv}/2"
    origin, number = pl.parse_live_id(live_id)
    record = await harness.server.ctx.stores.live.get_live(origin, number)
    assert record is not None and record.end_reason == "host_left"


# --- a server restart -------------------------------------------------------------------------


async def test_l1_restart_puts_streams_in_grace_and_the_host_resumes(tmp_path: Path) -> None:
    notifier = MemoryNotifier()
    config = make_config(
        tmp_path, store="sqlite", live_grace_seconds=3.0, live_counts_seconds=COUNTS_SECONDS
    )

    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
        harness = Harness(running, notifier)
        host, viewer, other_host = await users(harness, 3)
        async with AsyncExitStack() as stack:
            h, v, o = [
                await stack.enter_async_context(RivetClient.connect(harness.url, s))
                for s in (host, viewer, other_host)
            ]
            conv = await group(h, [viewer])
            second = await group(o, [viewer])
            live_id = (await go_live(h, conv, title="through a restart")).live.live_id
            abandoned = (await go_live(o, second)).live.live_id
            await join(v, live_id)
            await join(v, abandoned)
            await counts_until(h, live_id, lambda e: e.viewers == 1)
            running.shutdown()

    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(serve, config, notifier=notifier))
        harness = Harness(running, notifier)
        async with (
            RivetClient.connect(harness.url, host) as h,
            RivetClient.connect(harness.url, viewer) as v,
        ):
            active: pl.LiveState = await v.request(pl.LiveActive(rid=0, conv=conv))
            assert active.live is not None and active.live.live_id == live_id
            assert active.live.title == "through a restart" and not active.live.host_online
            resumed: pl.LiveJoined = await h.request(pl.LiveResume(rid=0, live_id=live_id))
            assert resumed.role == "host" and resumed.live.host_online
            rejoined = await join(v, live_id)
            assert [(s.user, s.device) for s in rejoined.stage] == [(uid(host), did(host))]
            await join(v, abandoned)
            # The other host never came back: that stream ends when its grace runs out.
            ended = await next_of(v, pl.LiveEndedEvent, within=10)
            assert (ended.live_id, ended.reason) == (abandoned, "host_left")
            assert ended.peak_viewers == 1 and ended.total_viewers == 2  # Viewer joined twice
            still: pl.LiveState = await v.request(pl.LiveActive(rid=0, conv=conv))
            assert still.live is not None and still.live.host_online
            summary: pl.LiveSummary = await h.request(pl.LiveEnd(rid=0, live_id=live_id))
            assert summary.peak_viewers == 1
        running.shutdown()
