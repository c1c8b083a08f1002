"""One heartbeat task for every connection (``server.heartbeat``), on trio's mock clock."""

from __future__ import annotations

import trio
import trio.testing

from protocol.errors import CloseCode
from server.config import Config
from server.connection import Connection
from server.heartbeat import Heartbeat

INTERVAL = 30.0


class _Peer:
    """Stands in for the WebSocket: ``ping`` returns when ``answering``, else never."""

    def __init__(self, *, answering: bool = True) -> None:
        self.answering = answering
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if not self.answering:
            await trio.sleep_forever()


def _conn(peer: _Peer) -> Connection:
    return Connection(ws=peer, queue_frames=8)  # type: ignore[arg-type]


def _heartbeat() -> Heartbeat:
    return Heartbeat(Config(heartbeat_seconds=INTERVAL))


async def test_answered_pings_repeat_each_interval_from_one_task(autojump_clock: object) -> None:
    heartbeat = _heartbeat()
    peers = [_Peer() for _ in range(100)]
    conns = [_conn(peer) for peer in peers]
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        for conn in conns:
            heartbeat.add(conn)
        await trio.sleep(INTERVAL / 2)
        assert [peer.pings for peer in peers] == [0] * 100
        # Between pings no task waits for any connection: the sweeper alone.
        (service,) = nursery.child_tasks
        (sweeps,) = service.child_nurseries
        assert sweeps.child_tasks == frozenset()
        await trio.sleep(INTERVAL * 3)
        nursery.cancel_scope.cancel()
    assert all(peer.pings == 3 for peer in peers)
    assert all(conn.close_request is None for conn in conns)


async def test_an_unanswered_ping_closes_the_connection_4052(autojump_clock: object) -> None:
    heartbeat = _heartbeat()
    silent, alive = _Peer(answering=False), _Peer()
    silent_conn, alive_conn = _conn(silent), _conn(alive)
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        heartbeat.add(silent_conn)
        heartbeat.add(alive_conn)
        await trio.sleep(INTERVAL * 2 + 1)
        nursery.cancel_scope.cancel()
    assert silent_conn.close_request is not None
    assert silent_conn.close_request.code == CloseCode.HEARTBEAT_TIMEOUT
    assert silent.pings == 1
    assert alive_conn.close_request is None


async def test_a_discarded_connection_is_not_pinged_and_its_ping_is_cancelled(
    autojump_clock: object,
) -> None:
    heartbeat = _heartbeat()
    waiting, gone = _Peer(answering=False), _Peer()
    waiting_conn, gone_conn = _conn(waiting), _conn(gone)
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        heartbeat.add(waiting_conn)
        heartbeat.add(gone_conn)
        heartbeat.discard(gone_conn)
        await trio.sleep(INTERVAL + 1)  # the ping to ``waiting`` is in flight
        heartbeat.discard(waiting_conn)
        await trio.sleep(INTERVAL * 2)
        (service,) = nursery.child_tasks
        (sweeps,) = service.child_nurseries
        assert sweeps.child_tasks == frozenset()  # the ping in flight was cancelled
        nursery.cancel_scope.cancel()
    assert (waiting.pings, gone.pings) == (1, 0)
    assert waiting_conn.close_request is None  # discarded: not closed by the heartbeat
    assert len(heartbeat) == 0


async def test_a_failing_ping_ends_only_its_connection(autojump_clock: object) -> None:
    class _Broken(_Peer):
        async def ping(self) -> None:
            raise RuntimeError("boom")

    heartbeat = _heartbeat()
    broken_conn, alive = _conn(_Broken()), _Peer()
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        heartbeat.add(broken_conn)
        heartbeat.add(_conn(alive))
        await trio.sleep(INTERVAL * 2 + 1)
        nursery.cancel_scope.cancel()
    assert broken_conn.close_request is not None
    assert broken_conn.close_request.code == CloseCode.INTERNAL_ERROR
    assert alive.pings == 2


async def test_connections_added_close_together_share_a_place_in_the_queue(
    autojump_clock: object,
) -> None:
    heartbeat = _heartbeat()
    peers = [_Peer() for _ in range(20)]
    conns = [_conn(peer) for peer in peers]
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        for conn in conns[:10]:
            heartbeat.add(conn)
            await trio.sleep(0.01)
        await trio.sleep(INTERVAL / 2)
        for conn in conns[10:]:
            heartbeat.add(conn)
        assert len(heartbeat._queue) == 2  # one entry per burst, not per connection
        heartbeat.discard(conns[0])
        # Not pinged before one interval less the slack and the sweep's own horizon.
        await trio.sleep(INTERVAL / 2 - heartbeat._slack - 1.0 - 0.2)
        assert all(peer.pings == 0 for peer in peers)
        await trio.sleep(INTERVAL * 2)
        nursery.cancel_scope.cancel()
    assert peers[0].pings == 0
    assert all(peer.pings == 2 for peer in peers[1:10])
    assert all(peer.pings in (2, 3) for peer in peers[10:])
    assert all(conn.close_request is None for conn in conns)


async def test_discarded_connections_do_not_pile_up_in_the_queue(autojump_clock: object) -> None:
    heartbeat = _heartbeat()
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        kept = _conn(_Peer())
        heartbeat.add(kept)
        for _ in range(500):
            conn = _conn(_Peer())
            heartbeat.add(conn)
            heartbeat.discard(conn)
        assert heartbeat._queued <= 2 * len(heartbeat) + 64 + 1
        assert len(heartbeat) == 1
        nursery.cancel_scope.cancel()
