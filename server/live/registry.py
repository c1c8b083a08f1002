"""The live streams this process runs (L1): who hosts, who watches, hands and co-hosts.

Pure in-memory state with synchronous methods: nothing here awaits, sends or decides. The
services ask ``server.policy`` whether a change is allowed, then make it here; the runtime
(``server.live.runtime``) tells participants what changed. Participants are connections,
because signalling is addressed to devices: one user may watch from several devices, and
counts and pages count users.

Every stream is also recorded in its origin group's ``LiveStore``; this state is rebuilt
from those records after a restart (viewers then join again).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from protocol.live import LiveRole, live_id
from server.connection import Connection
from storage.live import LiveRecord


@dataclass(frozen=True, slots=True)
class Departure:
    """What a connection's leaving changed in one stream."""

    user: int
    device: int
    role: LiveRole
    #: The user has no other connection in the stream (the viewer count moved).
    last: bool
    #: A hand this connection had raised was withdrawn.
    hand: bool


@dataclass(eq=False, slots=True)
class LiveStream:
    origin: str
    number: int
    host: int
    #: The device the stream was started (or last resumed) on.
    host_device: int
    title: str
    description: str
    started_at: int
    links: list[str] = field(default_factory=list)
    invited: set[int] = field(default_factory=set)
    #: The host's connection; None while the host is away (the grace period).
    host_conn: Connection | None = None
    #: Viewers (co-hosts included) by user: the connections each watches from.
    viewers: dict[int, set[Connection]] = field(default_factory=dict)
    #: Co-hosts and raised hands by user: the connection (device) on stage or asking.
    cohosts: dict[int, Connection] = field(default_factory=dict)
    hands: dict[int, Connection] = field(default_factory=dict)
    #: Users the host removed: they may not join again (unless invited again).
    removed: set[int] = field(default_factory=set)
    #: Distinct viewers seen by this process, and those counted before a restart.
    seen: set[int] = field(default_factory=set)
    total_before: int = 0
    peak: int = 0
    likes_pending: int = 0
    likes_total: int = 0
    ended: bool = False
    #: (peak, total) as last written to the store.
    checkpointed: tuple[int, int] = (0, 0)
    _sorted_viewers: list[int] = field(default_factory=list)
    _by_device: dict[int, Connection] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: LiveRecord) -> LiveStream:
        return cls(
            origin=record.origin,
            number=record.number,
            host=record.host,
            host_device=record.host_device,
            title=record.title,
            description=record.description,
            started_at=record.started_at,
            links=list(record.links),
            invited=set(record.invited),
            total_before=record.total_viewers,
            peak=record.peak_viewers,
            checkpointed=(record.peak_viewers, record.total_viewers),
        )

    @property
    def live_id(self) -> str:
        return live_id(self.origin, self.number)

    @property
    def groups(self) -> list[str]:
        """The origin and the linked groups, in link order."""
        return [self.origin, *self.links]

    @property
    def viewer_count(self) -> int:
        return len(self.viewers)

    @property
    def total_viewers(self) -> int:
        return self.total_before + len(self.seen)

    def role_of(self, conn: Connection) -> LiveRole | None:
        """The connection's part in the stream, or None if it is not in it."""
        if conn is self.host_conn:
            return "host"
        user = conn.user_id
        if user is None or conn not in self.viewers.get(user, ()):
            return None
        return "cohost" if self.cohosts.get(user) is conn else "viewer"

    def device_conn(self, device: int) -> Connection | None:
        """The connection through which ``device`` takes part, if it does."""
        return self._by_device.get(device)

    def connections(self) -> Iterator[Connection]:
        """Every participating connection: the host's and each viewer's."""
        if self.host_conn is not None:
            yield self.host_conn
        for conns in self.viewers.values():
            yield from conns

    def stage(self) -> list[tuple[int, Connection, LiveRole]]:
        """Whose media viewers watch: the host (when present), then co-hosts by user id."""
        on_stage: list[tuple[int, Connection, LiveRole]] = []
        if self.host_conn is not None:
            on_stage.append((self.host, self.host_conn, "host"))
        on_stage.extend((u, c, "cohost") for u, c in sorted(self.cohosts.items()))
        return on_stage

    def viewer_page(self, *, after: int, limit: int) -> list[int]:
        start = bisect.bisect_right(self._sorted_viewers, after)
        return self._sorted_viewers[start : start + limit]

    def participant_users(self) -> set[int]:
        users = set(self.viewers)
        if self.host_conn is not None:
            users.add(self.host)
        return users


class LiveRegistry:
    def __init__(self) -> None:
        self._streams: dict[str, LiveStream] = {}
        #: Group id -> the stream active in it (each group has at most one).
        self._by_group: dict[str, LiveStream] = {}
        #: Groups a start in progress has claimed, between the policy check and the record.
        self._claimed: set[str] = set()
        #: Connection -> the streams it takes part in (for the disconnect hook).
        self._by_conn: dict[Connection, set[LiveStream]] = {}
        #: Streams whose counts changed since the last coalesced event.
        self._dirty: set[LiveStream] = set()

    # streams and groups

    def get(self, live_id: str) -> LiveStream | None:
        return self._streams.get(live_id)

    def streams(self) -> list[LiveStream]:
        return list(self._streams.values())

    def active_in(self, group: str) -> LiveStream | None:
        return self._by_group.get(group)

    def taken(self, groups: Iterable[str]) -> list[str]:
        """Those of ``groups`` that have an active stream or one being started."""
        return [g for g in groups if g in self._by_group or g in self._claimed]

    def claim(self, groups: Iterable[str]) -> None:
        self._claimed.update(groups)

    def unclaim(self, groups: Iterable[str]) -> None:
        self._claimed.difference_update(groups)

    def add(self, stream: LiveStream) -> None:
        """Register an active stream in each of its groups not already taken."""
        self._streams[stream.live_id] = stream
        for group in stream.groups:
            self._by_group.setdefault(group, stream)
        if stream.host_conn is not None:
            self._attach(stream, stream.host_conn)

    def link(self, stream: LiveStream, groups: Iterable[str]) -> None:
        for group in groups:
            if group != stream.origin and group not in stream.links:
                stream.links.append(group)
                self._by_group.setdefault(group, stream)

    def discard(self, stream: LiveStream) -> None:
        """The stream ended: forget it and every participant's part in it."""
        stream.ended = True
        self._streams.pop(stream.live_id, None)
        for group in stream.groups:
            if self._by_group.get(group) is stream:
                del self._by_group[group]
        for conn in list(stream.connections()):
            self._detach(stream, conn)
        self._dirty.discard(stream)

    # participants

    def set_host(self, stream: LiveStream, conn: Connection | None) -> None:
        """Seat the host on ``conn`` (None: the host is away); a previous host connection
        leaves the stream."""
        old = stream.host_conn
        if old is not None and old is not conn:
            self._detach(stream, old)
            self._forget_device(stream, old)
        stream.host_conn = conn
        if conn is not None:
            assert conn.device_id is not None
            stream.host_device = conn.device_id
            self._attach(stream, conn)

    def join(self, stream: LiveStream, conn: Connection) -> bool:
        """Add a viewer connection. True if its user was not watching before.

        A device takes part through one connection, its newest: a device that joins again
        on a new connection while its old one is still in the stream (a reconnect that the
        old connection's heartbeat has not caught yet) moves its place there, on stage or
        with a hand up, without an event (signals are addressed to the device, which did
        not change); the old connection is out of the stream from then on."""
        user = conn.user_id
        assert user is not None
        old = stream._by_device.get(conn.device_id) if conn.device_id is not None else None
        if old is not None and old is not conn and old is not stream.host_conn:
            self._hand_over(stream, old, conn)
            return False
        conns = stream.viewers.get(user)
        first = conns is None
        if conns is None:
            conns = stream.viewers[user] = set()
            bisect.insort(stream._sorted_viewers, user)
            stream.seen.add(user)
            stream.peak = max(stream.peak, stream.viewer_count)
            self._dirty.add(stream)
        conns.add(conn)
        self._attach(stream, conn)
        return first

    def leave(self, stream: LiveStream, conn: Connection) -> Departure | None:
        """Remove one participating connection (a viewer's, a co-host's or the host's)."""
        role = stream.role_of(conn)
        if role is None:
            return None
        user, device = conn.user_id, conn.device_id
        assert user is not None and device is not None
        self._detach(stream, conn)
        self._forget_device(stream, conn)
        if role == "host":
            stream.host_conn = None
            return Departure(user=user, device=device, role=role, last=True, hand=False)
        hand = stream.hands.get(user) is conn
        if hand:
            del stream.hands[user]
        if role == "cohost":
            del stream.cohosts[user]
        conns = stream.viewers[user]
        conns.discard(conn)
        last = not conns
        if last:
            del stream.viewers[user]
            stream._sorted_viewers.remove(user)
            self._dirty.add(stream)
        return Departure(user=user, device=device, role=role, last=last, hand=hand)

    def remove_user(self, stream: LiveStream, user: int) -> list[Departure]:
        """Remove every connection of a viewer and bar the user from joining again."""
        departures = [
            d
            for conn in list(stream.viewers.get(user, ()))
            if (d := self.leave(stream, conn)) is not None
        ]
        stream.removed.add(user)
        return departures

    def connection_closed(self, conn: Connection) -> list[tuple[LiveStream, Departure]]:
        """The disconnect hook: the connection leaves every stream it took part in."""
        left = []
        for stream in list(self._by_conn.get(conn, ())):
            departure = self.leave(stream, conn)
            if departure is not None:
                left.append((stream, departure))
        self._by_conn.pop(conn, None)
        return left

    # hands and co-hosts

    def raise_hand(self, stream: LiveStream, conn: Connection, *, raised: bool) -> bool:
        """Raise (or withdraw) a hand; True if that changed anything."""
        user = conn.user_id
        assert user is not None
        if raised:
            changed = stream.hands.get(user) is not conn
            stream.hands[user] = conn
            return changed
        if stream.hands.get(user) is conn:
            del stream.hands[user]
            return True
        return False

    def answer_hand(self, stream: LiveStream, user: int, *, accept: bool) -> Connection:
        """Take the user's hand down; on ``accept`` their asking device goes on stage."""
        conn = stream.hands.pop(user)
        if accept:
            stream.cohosts[user] = conn
        return conn

    def step_down(self, stream: LiveStream, user: int) -> Connection | None:
        """Take a co-host off the stage (they keep watching)."""
        return stream.cohosts.pop(user, None)

    # counts

    def like(self, stream: LiveStream, count: int) -> None:
        stream.likes_pending += count
        stream.likes_total += count
        self._dirty.add(stream)

    def take_dirty(self) -> list[LiveStream]:
        """The streams whose counts changed since the last call."""
        dirty = [s for s in self._dirty if not s.ended]
        self._dirty.clear()
        return dirty

    def statistics(self) -> dict[str, int]:
        return {
            "streams": len(self._streams),
            "participants": sum(1 for s in self._streams.values() for _ in s.connections()),
            "dirty": len(self._dirty),
        }

    # bookkeeping

    def _hand_over(self, stream: LiveStream, old: Connection, new: Connection) -> None:
        """``new`` (the same device) takes ``old``'s place among the viewers, on stage and
        in the queue of hands."""
        user = new.user_id
        assert user is not None and old.user_id == user
        conns = stream.viewers[user]
        conns.discard(old)
        conns.add(new)
        if stream.cohosts.get(user) is old:
            stream.cohosts[user] = new
        if stream.hands.get(user) is old:
            stream.hands[user] = new
        self._detach(stream, old)
        self._attach(stream, new)

    def _attach(self, stream: LiveStream, conn: Connection) -> None:
        self._by_conn.setdefault(conn, set()).add(stream)
        if conn.device_id is not None:
            stream._by_device[conn.device_id] = conn

    def _detach(self, stream: LiveStream, conn: Connection) -> None:
        streams = self._by_conn.get(conn)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._by_conn[conn]

    def _forget_device(self, stream: LiveStream, conn: Connection) -> None:
        device = conn.device_id
        if device is not None and stream._by_device.get(device) is conn:
            del stream._by_device[device]
