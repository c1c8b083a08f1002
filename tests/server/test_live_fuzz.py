"""Property-based test of group live-stream signalling (L1, ``docs/live.md``, protocol §16)
through the router (no network, memory stores, a ``ManualClock`` for wall time and trio's
``MockClock`` for the grace timers and checkpoints, which the live service runs as in the
server).

A group of 3-5 members (user 0 owns it, user 1 is an admin) and one outsider; each user has
one or two devices, each on a connection that can drop (the hub detaches it, as the gateway
does when a socket closes) and reconnect (the same device, authenticated with its token).
Hypothesis draws sequences of: starting a stream (by a member, by the outsider, while one
is live), joining and leaving (twice, from two devices, the previous stream after it ended),
dropping without leaving, time passing (within and past the host's grace period), resuming,
raising and lowering hands and answering them (past the co-host limit), removing co-hosts
and viewers, offers/answers/ICE between any two devices, likes, invitations, the owner
removing and re-adding members (also while they watch), ending (by the host, an admin, a
member), viewer pages and ``live.active``.

A pure model predicts every reply and every ``ev.live.*`` event each connection gets; after
each op (and a flush of the coalesced counts) they must match exactly. So:

* counts in replies, pages and ``ev.live.counts`` are the distinct users watching (a user on
  two devices counts once; the host never), sent only to participants, only on a change;
* ``ev.live.signal`` reaches exactly the addressed device, only while both devices are in
  the stream and one of them is on stage, never anyone else (the outsider, a dropped
  connection, a member not watching);
* co-hosts never exceed ``live_max_cohosts``; the stage (one device per user) is what the
  ``ev.live.cohost`` events said;
* after a stream ends nobody can join it, signal in it, resume or end it (2006);
* every refusal has its documented code and changes nothing: no event, the same registry;
* the registry (participants by user and device, stage, hands, removals, who is attached
  where) equals the model after each op, and the stored record's peak and total viewers are
  never ahead of what happened, equal after each checkpoint, and final when it ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import msgspec
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings

from protocol import codec
from protocol import live as pl
from protocol import requests as rq
from protocol.errors import ErrorCode
from server.clock import ManualClock
from server.config import Config
from server.connection import Connection
from server.context import Context
from server.router import Router
from server.services import live as live_service
from storage.memory import open_memory_stores
from tests.server.routers import build_router, connect, frames

GRACE = 60
CHECKPOINT = 10
FRAME_DEADLINE = 5.0
OWNER, ADMIN = 0, 1
#: ``who`` -1 names the host of the latest stream; 0-5 a user (modulo the users there are);
#: ``PICK`` and above one of the latest stream's participants (or, as a target of
#: ``answer``, a user with a raised hand), so that drawn ops meet the stream often.
HOST = -1
PICK = 6

NOT_FOUND = int(ErrorCode.NOT_FOUND)
FORBIDDEN = int(ErrorCode.FORBIDDEN)
INVALID_STATE = int(ErrorCode.INVALID_STATE)
IN_PROGRESS = int(ErrorCode.LIVE_IN_PROGRESS)
COHOST_LIMIT = int(ErrorCode.COHOST_LIMIT)

who = st.integers(min_value=HOST, max_value=PICK + 3)
slot = st.integers(min_value=0, max_value=1)
#: Address the previous (ended) stream instead of the latest one, now and then.
old = st.integers(min_value=0, max_value=3).map(lambda n: n == 0)
kind = st.sampled_from(["offer", "answer", "ice"])

#: Who does what only the host may do: the host half the time.
boss = st.one_of(st.just(HOST), who)
#: Who takes part: a participant half the time.
party = st.one_of(st.integers(min_value=PICK, max_value=PICK + 3), who)

#: Each op's arguments, and how often it is drawn (``st.one_of`` would not weigh repeats).
OP_ARGS: dict[str, tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = {
    "start": (3, st.tuples(who, slot)),
    # Joiners are drawn among users, not participants (who mostly have joined already).
    "join": (6, st.tuples(st.integers(min_value=0, max_value=5), slot, old)),
    "leave": (1, st.tuples(party, slot, old)),
    "drop": (1, st.tuples(who, slot)),
    "reconnect": (1, st.tuples(who, slot)),
    "tick": (1, st.tuples(st.sampled_from([1, 10, 30, 59, 61]))),
    "resume": (2, st.tuples(boss, slot, old)),
    "raise": (3, st.tuples(party, slot, st.sampled_from([True, True, True, False]))),
    "answer": (3, st.tuples(boss, slot, st.one_of(st.just(PICK), party), st.booleans())),
    "remove": (1, st.tuples(boss, slot, party)),
    "signal": (5, st.tuples(party, slot, party, slot, kind, old)),
    "like": (1, st.tuples(who, slot, st.integers(min_value=1, max_value=3))),
    "invite": (1, st.tuples(boss, slot, who)),
    "kick": (1, st.tuples(who)),
    "readd": (1, st.tuples(who)),
    "end": (1, st.tuples(who, slot, old)),
    "viewers": (1, st.tuples(who, slot)),
    "active": (1, st.tuples(who, slot)),
    # A viewer raises a hand and the host (on the device it hosts from, or its first) answers
    # at once: two requests, each checked as ``raise`` and ``answer`` are.
    "promote": (2, st.tuples(party, slot, st.booleans())),
}
WEIGHTED = [name for name, (weight, _) in OP_ARGS.items() for _ in range(weight)]


@st.composite
def an_op(draw: st.DrawFn) -> tuple[Any, ...]:
    name = draw(st.sampled_from(WEIGHTED))
    return (name, *draw(OP_ARGS[name][1]))


OPS = an_op()
SETUP = st.tuples(
    st.integers(min_value=3, max_value=5),  # members, the owner included
    st.lists(st.booleans(), min_size=6, max_size=6),  # whether each user has a second device
    who,  # who starts the first stream, before the drawn ops
    st.integers(min_value=1, max_value=2),  # live_max_cohosts
)


@dataclass
class Conn:
    cid: int
    user: int  # an index into Run.users
    device: int
    conn: Connection
    open: bool = True


@dataclass
class Stream:
    """The model of one stream; users are indexes, connections ``Conn.cid``."""

    live_id: str
    number: int
    host: int
    started_at: int
    host_cid: int | None
    #: Trio time by which the host must resume (while away).
    deadline: float | None = None
    viewers: dict[int, set[int]] = field(default_factory=dict)
    cohosts: dict[int, int] = field(default_factory=dict)
    hands: dict[int, int] = field(default_factory=dict)
    invited: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    peak: int = 0
    likes_total: int = 0
    likes_pending: int = 0
    dirty: bool = False
    ended: bool = False
    #: (reason, ended_at) once ended.
    end: tuple[str, int] | None = None

    def participants(self) -> list[int]:
        cids = [] if self.host_cid is None else [self.host_cid]
        for conns in self.viewers.values():
            cids.extend(sorted(conns))
        return cids

    def role(self, cid: int, user: int) -> str | None:
        if cid == self.host_cid:
            return "host"
        if cid not in self.viewers.get(user, ()):
            return None
        return "cohost" if self.cohosts.get(user) == cid else "viewer"


class Run:
    def __init__(
        self,
        router: Router,
        clock: ManualClock,
        mock: trio.testing.MockClock,
        members: int,
        second: list[bool],
        max_cohosts: int,
    ) -> None:
        self.router = router
        self.ctx: Context = router.ctx
        self.clock = clock
        self.mock = mock
        self.n_members = members
        self.outsider = members
        self.second = second
        self.max_cohosts = max_cohosts
        self.rid = 1000
        self.users: list[int] = []
        self.tokens: dict[tuple[int, int], str] = {}
        self.devices: dict[tuple[int, int], int] = {}
        #: (user, slot) -> the cid of the slot's connection, None while dropped.
        self.slots: dict[tuple[int, int], int | None] = {}
        self.conns: dict[int, Conn] = {}
        self.control = 0  # the owner's connection for group ops, never in a stream
        self.group = ""
        self.members: set[int] = set()
        self.admins: set[int] = set()
        self.streams: list[Stream] = []
        self.expected: dict[int, list[dict[str, Any]]] = {}
        self.signals = 0
        #: Events that arrived with a reply, by ``id`` of the connection, checked with the rest.
        self.unread: dict[int, list[dict[str, Any]]] = {}
        #: Whether the last op crossed a checkpoint of the live service, and when the next is.
        self.checkpointed = False
        self.next_checkpoint: float = CHECKPOINT

    # --- the wire ---------------------------------------------------------------------------

    async def send(self, conn: Connection, request: rq.Request) -> dict[str, Any]:
        self.rid += 1
        request = msgspec.structs.replace(request, rid=self.rid)
        with trio.fail_after(FRAME_DEADLINE):
            await self.router.handle_frame(conn, codec.encode_request(request))
        got = frames(conn)
        replies = [f for f in got if f["op"] in ("ok", "error")]
        assert len(replies) == 1, (request, got)
        reply = replies[0]
        assert reply.get("rid") == self.rid, reply
        assert reply.get("code") != ErrorCode.INTERNAL, (request, reply)
        # Events that came with the reply are checked with the others.
        self.unread.setdefault(id(conn), []).extend(
            f for f in got if f["op"] not in ("ok", "error")
        )
        return reply

    async def call(self, cid: int, request: rq.Request) -> dict[str, Any]:
        return await self.send(self.conns[cid].conn, request)

    def new_conn(self, user: int, device: int) -> Conn:
        cid = len(self.conns)
        made = Conn(cid=cid, user=user, device=device, conn=connect(queue_frames=4096))
        self.conns[cid] = made
        return made

    async def login(self, user: int, slot_: int) -> None:
        """Log in the user's first device with a code; a further device gets its tokens as
        ``login.verify`` would issue them (a second code for the phone would be refused)."""
        conn = connect(queue_frames=4096)
        if slot_ == 0:
            phone = f"+155503000{user}"
            assert (await self.send(conn, rq.Hello(rid=0, version=1)))["op"] == "ok"
            await self.send(conn, rq.LoginRequestCode(rid=0, phone=phone))
            code = self.ctx.notifier.last_code(phone)  # type: ignore[attr-defined]
            reply = await self.send(conn, rq.LoginVerify(rid=0, phone=phone, code=code))
            assert reply["op"] == "ok", reply
            token = reply["result"]["access_token"]
            assert len(self.users) == user
            self.users.append(reply["result"]["session"]["user_id"])
        else:
            account = await self.ctx.stores.personal.get_user(self.users[user])
            assert account is not None
            issued = await self.ctx.credentials.issue_for_new_device(
                self.ctx.stores, account, device_name=f"device {slot_}"
            )
            token = str(issued["access_token"])
            reply = await self.send(conn, rq.Hello(rid=0, version=1, token=token))
            assert reply["op"] == "ok", reply
        session = reply["result"]["session"]
        assert session["user_id"] == self.users[user], session
        cid = len(self.conns)
        self.conns[cid] = Conn(cid=cid, user=user, device=session["device_id"], conn=conn)
        self.ctx.hub.attach(conn)
        if slot_ < 0:
            self.control = cid
            return
        self.tokens[(user, slot_)] = token
        self.devices[(user, slot_)] = session["device_id"]
        self.slots[(user, slot_)] = cid

    async def reconnect(self, user: int, slot_: int) -> int:
        made = self.new_conn(user, self.devices[(user, slot_)])
        token = self.tokens[(user, slot_)]
        reply = await self.send(made.conn, rq.Hello(rid=0, version=1, token=token))
        assert reply["op"] == "ok", reply
        assert reply["result"]["session"]["device_id"] == made.device, reply
        self.ctx.hub.attach(made.conn)
        self.slots[(user, slot_)] = made.cid
        return made.cid

    # --- setup --------------------------------------------------------------------------------

    async def setup(self) -> None:
        for user in range(self.n_members + 1):
            await self.login(user, 0)
            if self.second[user]:
                await self.login(user, 1)
        await self.login(OWNER, -1)
        created = await self.call(
            self.control,
            rq.GroupCreate(rid=0, cmid="g", title="team", members=self.users[1 : self.n_members]),
        )
        assert created["op"] == "ok", created
        self.group = created["result"]["conv"]["conv"]
        role = await self.call(
            self.control,
            rq.GroupSetRole(rid=0, conv=self.group, user=self.users[ADMIN], role="admin"),
        )
        assert role["op"] == "ok", role
        self.members = set(range(self.n_members))
        self.admins = {OWNER, ADMIN}
        self.drain_all()

    def drain_all(self) -> None:
        for made in self.conns.values():
            frames(made.conn)
        self.unread = {}

    # --- resolving drawn indexes ----------------------------------------------------------

    def latest(self) -> Stream | None:
        return self.streams[-1] if self.streams else None

    def user(self, index: int, pool: str = "viewers") -> int:
        latest = self.latest()
        if index == HOST:
            return OWNER if latest is None else latest.host
        if index >= PICK and latest is not None and not latest.ended:
            users = sorted(latest.hands if pool == "hands" and latest.hands else latest.viewers)
            if users:
                return users[(index - PICK) % len(users)]
        return index % (self.n_members + 1)

    def picked(self, index: int, *, viewers: bool = False) -> int | None:
        """The participant connection ``index`` picks, if it picks one (the host's first)."""
        latest = self.latest()
        if index < PICK or latest is None or latest.ended:
            return None
        cids = latest.participants()
        if viewers:
            cids = [c for c in cids if c != latest.host_cid]
        return cids[(index - PICK) % len(cids)] if cids else None

    def slot_of(self, user: int, index: int) -> int:
        return index % (2 if self.second[user] else 1)

    def devices_slot(self, device: int) -> int:
        return next(slot_ for (_, slot_), d in self.devices.items() if d == device)

    def target(self, use_old: bool) -> Stream | None:
        if use_old:
            ended = [s for s in self.streams if s.ended]
            if ended:
                return ended[-1]
        return self.latest()

    def live_id(self, stream: Stream | None) -> str:
        return f"{self.group}/99" if stream is None else stream.live_id

    def member(self, user: int) -> bool:
        return user in self.members

    def visible(self, stream: Stream, cid: int) -> bool:
        made = self.conns[cid]
        return (
            stream.role(cid, made.user) is not None
            or made.user in stream.invited
            or self.member(made.user)
        )

    def open_conns(self, users: set[int]) -> list[int]:
        return [c.cid for c in self.conns.values() if c.open and c.user in users]

    # --- expectations -----------------------------------------------------------------------

    def expect(self, cids: list[int], event: dict[str, Any]) -> None:
        for cid in cids:
            self.expected.setdefault(cid, []).append(event)

    def info(self, stream: Stream) -> dict[str, Any]:
        return {
            "live_id": stream.live_id,
            "conv": self.group,
            "host": self.users[stream.host],
            "title": f"live {stream.number}",
            "description": "",
            "groups": [self.group],
            "started_at": stream.started_at,
            "host_online": stream.host_cid is not None,
        }

    def joined(self, stream: Stream, cid: int) -> dict[str, Any]:
        role = stream.role(cid, self.conns[cid].user)
        stage = []
        if stream.host_cid is not None:
            stage.append(
                {
                    "user": self.users[stream.host],
                    "device": self.conns[stream.host_cid].device,
                    "role": "host",
                }
            )
        for uid, c in sorted((self.users[u], c) for u, c in stream.cohosts.items()):
            stage.append({"user": uid, "device": self.conns[c].device, "role": "cohost"})
        return {
            "live": self.info(stream),
            "role": role,
            "stage": stage,
            "viewers": len(stream.viewers),
            "total_likes": stream.likes_total,
            "hands": sorted(self.users[u] for u in stream.hands) if role == "host" else [],
        }

    def ev(self, op: str, stream: Stream, **fields: Any) -> dict[str, Any]:
        return {"op": f"ev.live.{op}", "live_id": stream.live_id, **fields}

    # --- model transitions shared by several ops -----------------------------------------------

    def depart(self, stream: Stream, cid: int) -> None:
        """A viewer's or co-host's connection leaves (``live.leave``, a drop, a removal)."""
        made = self.conns[cid]
        user = made.user
        cohost = stream.cohosts.get(user) == cid
        hand = stream.hands.get(user) == cid
        stream.viewers[user].discard(cid)
        if not stream.viewers[user]:
            del stream.viewers[user]
            stream.dirty = True
        if hand:
            del stream.hands[user]
        if cohost:
            del stream.cohosts[user]
            self.expect(
                stream.participants(),
                self.ev("cohost", stream, user=self.users[user], device=made.device, cohost=False),
            )
        if hand and stream.host_cid is not None:
            self.expect(
                [stream.host_cid],
                self.ev("hand", stream, user=self.users[user], device=made.device, raised=False),
            )

    def finish(self, stream: Stream, reason: str) -> dict[str, Any]:
        """The stream ends now; returns its summary."""
        ended_at = self.clock.now_ms()
        participants = set(stream.viewers)
        if stream.host_cid is not None:
            participants.add(stream.host)
        audience = self.members | stream.invited | participants
        summary = {
            "live_id": stream.live_id,
            "reason": reason,
            "ended_at": ended_at,
            "peak_viewers": stream.peak,
            "total_viewers": len(stream.seen),
        }
        self.expect(self.open_conns(audience), {"op": "ev.live.ended", **summary})
        stream.ended = True
        stream.end = (reason, ended_at)
        stream.host_cid = None
        stream.deadline = None
        stream.viewers.clear()
        stream.cohosts.clear()
        stream.hands.clear()
        stream.dirty = False
        return summary

    def refused(self, reply: dict[str, Any], code: int, op: tuple[Any, ...]) -> None:
        assert reply["op"] == "error" and reply["code"] == code, (op, code, reply)

    def accepted(self, reply: dict[str, Any], op: tuple[Any, ...]) -> dict[str, Any]:
        assert reply["op"] == "ok", (op, reply)
        result: dict[str, Any] = reply["result"]
        return result

    def gate(self, stream: Stream | None) -> int | None:
        """The refusal every op on a stream gets first: unknown or ended."""
        return NOT_FOUND if stream is None or stream.ended else None

    def host_gate(self, stream: Stream, cid: int) -> int | None:
        """What only the host may do: others get 2005, or 2006 if it is invisible to them."""
        if self.conns[cid].user == stream.host:
            return None
        return FORBIDDEN if self.visible(stream, cid) else NOT_FOUND

    # --- ops -----------------------------------------------------------------------------------

    async def apply(self, op: tuple[Any, ...]) -> None:
        self.checkpointed = False
        kind = op[0]
        if kind == "tick":
            await self.tick(op[1])
            return
        if kind in ("kick", "readd"):
            await self.membership(kind, self.user(op[1]), op)
            return
        cid = self.picked(op[1], viewers=kind in ("raise", "leave", "like", "promote"))
        if cid is not None:
            made = self.conns[cid]
            key = (made.user, self.devices_slot(made.device))
        else:
            user = self.user(op[1])
            key = (user, self.slot_of(user, op[2]))
            cid = self.slots[key]
        if kind == "reconnect" or cid is None:
            if cid is not None:
                self.drop(cid)
            await self.reconnect(*key)
            return
        if kind == "drop":
            self.drop(cid)
            return
        if kind == "promote":
            await self.promote(cid, op)
            return
        handler = getattr(self, f"op_{kind}")
        await handler(cid, op)

    async def tick(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.mock.jump(seconds)
        await trio.testing.wait_all_tasks_blocked()
        now = trio.current_time()
        # The checkpoint task sleeps CHECKPOINT seconds from whenever it last woke.
        if now >= self.next_checkpoint:
            self.checkpointed = True
            self.next_checkpoint = now + CHECKPOINT
        stream = self.latest()
        deadline = None if stream is None or stream.ended else stream.deadline
        if stream is not None and deadline is not None and deadline <= now:
            self.finish(stream, "host_left")

    def drop(self, cid: int) -> None:
        made = self.conns[cid]
        self.ctx.hub.detach(made.conn)
        made.open = False
        for key, current in self.slots.items():
            if current == cid:
                self.slots[key] = None
        stream = self.latest()
        if stream is None or stream.ended:
            return
        if stream.host_cid == cid:
            stream.host_cid = None
            stream.deadline = trio.current_time() + GRACE
            resume_by = self.clock.now_ms() + GRACE * 1000
            self.expect(
                stream.participants(),
                self.ev("host", stream, online=False, device=None, resume_by=resume_by),
            )
        elif stream.role(cid, made.user) is not None:
            self.depart(stream, cid)

    async def membership(self, kind: str, user: int, op: tuple[Any, ...]) -> None:
        if kind == "kick":
            if user == OWNER:
                return
            reply = await self.call(
                self.control, rq.GroupRemove(rid=0, conv=self.group, user=self.users[user])
            )
            assert (reply["op"] == "ok") == self.member(user), (op, reply)
            self.members.discard(user)
            self.admins.discard(user)
        else:
            if user == self.outsider:
                return
            reply = await self.call(
                self.control, rq.GroupAdd(rid=0, conv=self.group, users=[self.users[user]])
            )
            if not self.member(user):
                self.accepted(reply, op)
            self.members.add(user)

    async def op_start(self, cid: int, op: tuple[Any, ...]) -> None:
        made = self.conns[cid]
        latest = self.latest()
        number = len(self.streams) + 1
        reply = await self.call(cid, pl.LiveStart(rid=0, conv=self.group, title=f"live {number}"))
        if not self.member(made.user):
            return self.refused(reply, NOT_FOUND, op)
        if latest is not None and not latest.ended:
            return self.refused(reply, IN_PROGRESS, op)
        result = self.accepted(reply, op)
        stream = Stream(
            live_id=f"{self.group}/{number}",
            number=number,
            host=made.user,
            started_at=self.clock.now_ms(),
            host_cid=cid,
        )
        self.streams.append(stream)
        assert result == self.joined(stream, cid), (op, result)
        self.expect(
            self.open_conns(self.members | {made.user}),
            {"op": "ev.live.started", "live": self.info(stream)},
        )
        return None

    async def op_join(self, cid: int, op: tuple[Any, ...]) -> None:
        made = self.conns[cid]
        stream = self.target(op[3])
        reply = await self.call(cid, pl.LiveJoin(rid=0, live_id=self.live_id(stream)))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        user = made.user
        if user == stream.host:
            return self.refused(reply, INVALID_STATE, op)
        if user in stream.removed or not (self.member(user) or user in stream.invited):
            return self.refused(reply, NOT_FOUND, op)
        result = self.accepted(reply, op)
        if stream.role(cid, user) is None:
            if user not in stream.viewers:
                stream.viewers[user] = set()
                stream.seen.add(user)
                stream.dirty = True
                stream.peak = max(stream.peak, len(stream.viewers))
            stream.viewers[user].add(cid)
        assert result == self.joined(stream, cid), (op, result)
        return None

    async def op_leave(self, cid: int, op: tuple[Any, ...]) -> None:
        made = self.conns[cid]
        stream = self.target(op[3])
        reply = await self.call(cid, pl.LiveLeave(rid=0, live_id=self.live_id(stream)))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        role = stream.role(cid, made.user)
        if role is None:
            return self.refused(reply, NOT_FOUND, op)
        if role == "host":
            return self.refused(reply, INVALID_STATE, op)
        self.accepted(reply, op)
        self.depart(stream, cid)
        return None

    async def op_resume(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.target(op[3])
        reply = await self.call(cid, pl.LiveResume(rid=0, live_id=self.live_id(stream)))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if (code := self.host_gate(stream, cid)) is not None:
            return self.refused(reply, code, op)
        result = self.accepted(reply, op)
        previous = stream.host_cid
        stream.host_cid = cid
        stream.deadline = None
        back = self.ev("host", stream, online=True, device=self.conns[cid].device, resume_by=None)
        told = stream.participants()
        if previous is not None and previous != cid:
            told.append(previous)
        self.expect(told, back)
        assert result == self.joined(stream, cid), (op, result)
        return None

    async def op_raise(self, cid: int, op: tuple[Any, ...]) -> None:
        made = self.conns[cid]
        stream = self.latest()
        raised = op[3]
        reply = await self.call(
            cid, pl.LiveRaiseHand(rid=0, live_id=self.live_id(stream), raised=raised)
        )
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        user = made.user
        role = stream.role(cid, user)
        if role is None:
            return self.refused(reply, NOT_FOUND, op)
        # The stage holds one device per user: a user with a device on stage is on stage.
        if role != "viewer" or user in stream.cohosts:
            return self.refused(reply, INVALID_STATE, op)
        self.accepted(reply, op)
        if raised:
            changed = stream.hands.get(user) != cid
            stream.hands[user] = cid
        else:
            changed = stream.hands.get(user) == cid
            if changed:
                del stream.hands[user]
        if changed and stream.host_cid is not None:
            self.expect(
                [stream.host_cid],
                self.ev("hand", stream, user=self.users[user], device=made.device, raised=raised),
            )
        return None

    async def promote(self, cid: int, op: tuple[Any, ...]) -> None:
        asker = self.conns[cid].user
        await self.op_raise(cid, ("raise", *op[1:3], True))
        await self.check(op)
        stream = self.latest()
        host = OWNER if stream is None else stream.host
        answering = stream.host_cid if stream is not None else None
        if answering is None:
            answering = self.slots[(host, 0)]
        if answering is None:
            answering = await self.reconnect(host, 0)
        await self.op_answer(answering, ("answer", HOST, 0, asker, op[3]))

    async def op_answer(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        asker, accept = self.user(op[3], "hands"), op[4]
        reply = await self.call(
            cid,
            pl.LiveAnswerHand(
                rid=0, live_id=self.live_id(stream), user=self.users[asker], accept=accept
            ),
        )
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if (code := self.host_gate(stream, cid)) is not None:
            return self.refused(reply, code, op)
        if asker not in stream.hands:
            return self.refused(reply, INVALID_STATE, op)
        if accept and len(stream.cohosts) >= self.max_cohosts:
            return self.refused(reply, COHOST_LIMIT, op)
        self.accepted(reply, op)
        asking = stream.hands.pop(asker)
        device = self.conns[asking].device
        if accept:
            stream.cohosts[asker] = asking
            self.expect(
                stream.participants(),
                self.ev("cohost", stream, user=self.users[asker], device=device, cohost=True),
            )
        else:
            self.expect(
                [asking],
                self.ev("hand", stream, user=self.users[asker], device=device, raised=False),
            )
        return None

    async def op_remove(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        target = self.user(op[3])
        reply = await self.call(
            cid, pl.LiveRemove(rid=0, live_id=self.live_id(stream), user=self.users[target])
        )
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if (code := self.host_gate(stream, cid)) is not None:
            return self.refused(reply, code, op)
        if target == stream.host:
            return self.refused(reply, INVALID_STATE, op)
        if target not in stream.viewers:
            return self.refused(reply, NOT_FOUND, op)
        self.accepted(reply, op)
        if target in stream.cohosts:
            on_stage = stream.cohosts.pop(target)
            self.expect(
                stream.participants(),
                self.ev(
                    "cohost",
                    stream,
                    user=self.users[target],
                    device=self.conns[on_stage].device,
                    cohost=False,
                ),
            )
            return None
        gone = sorted(stream.viewers[target])
        for viewer in gone:
            self.depart(stream, viewer)
        stream.removed.add(target)
        self.expect(gone, self.ev("removed", stream))
        return None

    async def op_signal(self, cid: int, op: tuple[Any, ...]) -> None:
        made = self.conns[cid]
        stream = self.target(op[6])
        picked = self.picked(op[3])
        if picked is not None:
            to_device = self.conns[picked].device
        else:
            to_user = self.user(op[3])
            to_device = self.devices[(to_user, self.slot_of(to_user, op[4]))]
        self.signals += 1
        payload = f"{op[5]} #{self.signals}"
        reply = await self.call(
            cid,
            pl.LiveSignal(
                rid=0,
                live_id=self.live_id(stream),
                to_device=to_device,
                kind=op[5],
                payload=payload,
            ),
        )
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        sender = stream.role(cid, made.user)
        if sender is None:
            return self.refused(reply, NOT_FOUND, op)
        targets = [c for c in stream.participants() if self.conns[c].device == to_device]
        assert len(targets) <= 1, targets
        receiver = None if not targets else stream.role(targets[0], self.conns[targets[0]].user)
        if (
            receiver is None
            or to_device == made.device
            or (sender == "viewer" and receiver == "viewer")
        ):
            return self.refused(reply, NOT_FOUND, op)
        self.accepted(reply, op)
        event = self.ev(
            "signal",
            stream,
            from_user=self.users[made.user],
            from_device=made.device,
            kind=op[5],
            payload=payload,
        )
        self.expect(targets, event)
        return None

    async def op_like(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        reply = await self.call(cid, pl.LiveLike(rid=0, live_id=self.live_id(stream), count=op[3]))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if stream.role(cid, self.conns[cid].user) is None:
            return self.refused(reply, NOT_FOUND, op)
        self.accepted(reply, op)
        stream.likes_total += op[3]
        stream.likes_pending += op[3]
        stream.dirty = True
        return None

    async def op_invite(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        guest = self.user(op[3])
        reply = await self.call(
            cid, pl.LiveInvite(rid=0, live_id=self.live_id(stream), users=[self.users[guest]])
        )
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if (code := self.host_gate(stream, cid)) is not None:
            return self.refused(reply, code, op)
        self.accepted(reply, op)
        if guest != stream.host:
            stream.invited.add(guest)
            stream.removed.discard(guest)
            self.expect(
                self.open_conns({guest}), {"op": "ev.live.invited", "live": self.info(stream)}
            )
        return None

    async def op_end(self, cid: int, op: tuple[Any, ...]) -> None:
        user = self.conns[cid].user
        stream = self.target(op[3])
        reply = await self.call(cid, pl.LiveEnd(rid=0, live_id=self.live_id(stream)))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if user == stream.host:
            reason = "host"
        elif self.member(user) and user in self.admins:
            reason = "admin"
        else:
            return self.refused(reply, FORBIDDEN if self.visible(stream, cid) else NOT_FOUND, op)
        result = self.accepted(reply, op)
        assert result == self.finish(stream, reason), (op, result)
        return None

    async def op_viewers(self, cid: int, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        reply = await self.call(cid, pl.LiveViewers(rid=0, live_id=self.live_id(stream)))
        if (code := self.gate(stream)) is not None:
            return self.refused(reply, code, op)
        assert stream is not None
        if stream.role(cid, self.conns[cid].user) is None:
            return self.refused(reply, NOT_FOUND, op)
        result = self.accepted(reply, op)
        watching = sorted(self.users[u] for u in stream.viewers)
        assert result == {"live_id": stream.live_id, "viewers": watching, "next_after": None}
        return None

    async def op_active(self, cid: int, op: tuple[Any, ...]) -> None:
        reply = await self.call(cid, pl.LiveActive(rid=0, conv=self.group))
        if not self.member(self.conns[cid].user):
            return self.refused(reply, NOT_FOUND, op)
        result = self.accepted(reply, op)
        stream = self.latest()
        live = None if stream is None or stream.ended else self.info(stream)
        assert result == {"live": live}, (op, result)
        return None

    # --- invariants ----------------------------------------------------------------------------

    async def check(self, op: tuple[Any, ...]) -> None:
        stream = self.latest()
        # The counts task's work, now: one event to each participant iff something changed.
        self.ctx.live.counts.flush()
        if stream is not None and not stream.ended and stream.dirty:
            counts = self.ev(
                "counts",
                stream,
                viewers=len(stream.viewers),
                likes=stream.likes_pending,
                total_likes=stream.likes_total,
            )
            self.expect(stream.participants(), counts)
            stream.likes_pending = 0
            stream.dirty = False
        for made in self.conns.values():
            got = self.unread.pop(id(made.conn), []) + frames(made.conn)
            assert all(f["op"] not in ("ok", "error") for f in got), got
            live = sorted(
                json.dumps(f, sort_keys=True) for f in got if f["op"].startswith("ev.live.")
            )
            want = sorted(json.dumps(e, sort_keys=True) for e in self.expected.pop(made.cid, []))
            assert live == want, (op, made, live, want)
        assert not self.expected
        self.check_registry(op)
        await self.check_records(op)

    def check_registry(self, op: tuple[Any, ...]) -> None:
        registry = self.ctx.live.registry

        def conn(cid: int) -> Connection:
            return self.conns[cid].conn

        attached: dict[Connection, set[str]] = {}
        for stream in self.streams:
            got = registry.get(stream.live_id)
            if stream.ended:
                assert got is None, (op, stream.live_id)
                continue
            assert got is not None and not got.ended, (op, stream.live_id)
            assert registry.active_in(self.group) is got
            want_host = None if stream.host_cid is None else conn(stream.host_cid)
            assert got.host_conn is want_host, (op, got.host_conn, stream.host_cid)
            assert got.viewers == {
                self.users[u]: {conn(c) for c in cids} for u, cids in stream.viewers.items()
            }, (op, got.viewers, stream.viewers)
            assert got.cohosts == {self.users[u]: conn(c) for u, c in stream.cohosts.items()}, (
                op,
                got.cohosts,
                stream.cohosts,
            )
            assert got.hands == {self.users[u]: conn(c) for u, c in stream.hands.items()}, (
                op,
                got.hands,
                stream.hands,
            )
            assert got.invited == {self.users[u] for u in stream.invited}
            assert got.removed == {self.users[u] for u in stream.removed}
            assert len(got.cohosts) <= self.max_cohosts
            assert got.viewer_count == len(stream.viewers)
            assert got.peak == stream.peak and got.total_viewers == len(stream.seen), op
            assert got.viewer_page(after=0, limit=100) == sorted(
                self.users[u] for u in stream.viewers
            )
            for cid in stream.participants():
                attached.setdefault(conn(cid), set()).add(stream.live_id)
                assert got.device_conn(self.conns[cid].device) is conn(cid), (op, cid)
            for device in self.devices.values():
                holder = got.device_conn(device)
                if holder is not None:
                    assert holder in {conn(c) for c in stream.participants()}, (op, device)
        found = {c: {s.live_id for s in streams} for c, streams in registry._by_conn.items()}
        assert found == attached, (op, found, attached)

    async def check_records(self, op: tuple[Any, ...]) -> None:
        store = self.ctx.live.store_for(self.group)
        for stream in self.streams:
            record = await store.get_live(self.group, stream.number)
            assert record is not None and record.host == self.users[stream.host]
            figures = (record.peak_viewers, record.total_viewers)
            now = (stream.peak, len(stream.seen))
            if stream.end is not None:
                assert (record.end_reason, record.ended_at) == stream.end, (op, record)
                assert figures == now, (op, record, now)
                continue
            assert record.active, (op, record)
            assert figures[0] <= now[0] and figures[1] <= now[1], (op, figures, now)
            assert figures[0] <= figures[1], (op, figures)
            if self.checkpointed and stream is self.latest():
                assert figures == now, ("checkpoint", op, figures, now)


Setup = tuple[int, list[bool], int, int]


async def _run(setup: Setup, ops: list[tuple[Any, ...]]) -> None:
    members, second, first, max_cohosts = setup
    config = Config(
        store="memory",
        send_rate_per_second=10_000,
        send_burst=10_000,
        signal_rate_per_second=10_000,
        signal_burst=10_000,
        request_rate_per_second=10_000,
        request_burst=10_000,
        access_token_ttl=10**8,
        live_max_cohosts=max_cohosts,
        live_grace_seconds=GRACE,
        live_counts_seconds=1.0,
        live_checkpoint_seconds=CHECKPOINT,
    )
    clock = ManualClock()
    mock = trio.lowlevel.current_clock()
    assert isinstance(mock, trio.testing.MockClock)
    async with open_memory_stores() as stores:
        router = build_router(config, stores, clock=clock)
        run = Run(router, clock, mock, members, second, max_cohosts)
        await run.setup()
        async with trio.open_nursery() as nursery:
            await nursery.start(live_service.run, router.ctx)
            # The checkpoint task is started soon: let it reach its first sleep.
            await trio.testing.wait_all_tasks_blocked()
            for op in [("start", first, 0), *ops]:
                await run.apply(op)
                await run.check(op)
            nursery.cancel_scope.cancel()


EXAMPLES = int(os.environ.get("RIVET_LIVE_FUZZ_EXAMPLES", "200"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(setup=SETUP, ops=st.lists(OPS, min_size=30, max_size=80))
# L1, found by this test: the stage holds one device per user (``ev.live.cohost`` and
# ``live.remove`` name the user; the stage lists co-hosts by user), yet a second device of a
# co-host could raise a hand, and accepting it moved the user's place on stage to that device
# silently: the device on stage until then got no ``ev.live.cohost`` false, nor did anyone
# else, so every participant still offered to and signalled it as on stage while the server
# relayed to it only as a viewer. User 0 watches on both devices; user 1 hosts.
@example(
    setup=(3, [True, False, False, False, False, False], 1, 2),
    ops=[
        ("join", 0, 1, False),
        ("raise", 0, 1, True),
        ("answer", HOST, 0, 0, True),
        ("join", 0, 0, False),
        ("raise", 0, 0, True),
        ("answer", HOST, 0, 0, True),
    ],
)
def test_live_signalling_follows_the_model(setup: Setup, ops: list[tuple[Any, ...]]) -> None:
    trio.run(_run, setup, ops, clock=trio.testing.MockClock())
