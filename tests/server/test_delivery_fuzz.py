"""Property-based test of multi-device delivery, catch-up, unread counts, read receipts and
recall through the router (no network, memory stores by default, a ``ManualClock``).

Users A, B and C; A and B have two devices each, C one (each device is a connection
attached to the hub, as the gateway does). Conversations: the single chat A-B, each user's
chat with themselves, and a group that A owns with B, which C joins later. Hypothesis draws
sequences of: sends (fresh ``cmid``s, resends of an earlier one, a used ``cmid`` with other
content), a device going offline and coming back, one ``sync`` page (1-3 events) of a device
that is catching up while live events keep arriving, reads (backwards, beyond the last seq,
twice, from before joining), recalls (the sender's, the group owner's, within and after the
window, again), leaving the group and joining it, and joining it again after leaving (M1:
every membership's range stays visible, nothing from between them shows), clock ticks,
settings changes (the personal stream), receipt flushes, ``receipts.*``, ``msg.history`` and
a new device's summaries.

A small pure model (``Model``) says what each op must do and what each device must hold.
After every op:

* **replies**: each is what the model says (seq, stream, duplicate, unread, read position,
  the first recall's stream, the error code); a refused or duplicate write stores nothing
  (the stream heads do not move), an accepted one appends exactly one entry;
* **live events** (``docs/delivery.md``, ``docs/protocol.md`` section 9): every online
  device gets exactly the events for its user, each once, messages in seq order per
  conversation: a message or system entry to the current members (and to the one who
  left), a recall to the current members who can see the message, a read position to the
  reader's devices with the new unread count and, in a single chat only, to the peer
  without it; ``ev.receipts`` only on a flush, only to senders, with exact counts, for
  every message newly read by someone else (by a read or by sending); and each durable
  event pushed live is one that ``sync`` returns to that user too (never the only copy);
* **sync pages** (section 14): each page is exactly the next events after its token that
  the member may see (the ``CrossDomainStore`` visibility rule), conversation events by
  stream then personal ones, with the right content (none for a recalled message) and no
  ``unread``; the next token starts right after the page (nothing skipped, nothing
  repeated); ``more`` is false only when everything was returned; the summaries are
  exactly the conversations changed since the token, newest first, with the model's unread
  count (own and recalled messages never count), read position, last message and mute;
* **the device's view** (after the SDK's de-duplication: messages by (conv, seq), recalls
  and reads by stream): an online device that has caught up holds exactly the messages of
  the conversations and ranges its user was entitled to see, none lost, none doubled, none
  from elsewhere, recalled ones without content (a former member's device learns of a
  recall at its next catch-up);
* ``msg.history`` serves exactly the member's visible range, never a recalled message's
  content; ``receipts.counts``/``receipts.members`` count exactly the members who can see.

A long hunt: ``RIVET_DELIVERY_FUZZ_EXAMPLES=20000`` (and ``RIVET_DELIVERY_FUZZ_STORE=sqlite``
for the SQLite stores).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings

from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id, self_conversation_id
from protocol.sync import SyncToken
from server.clock import ManualClock
from server.config import Config
from server.connection import Connection
from server.policy import RECALL_WINDOW_MS
from server.router import Router
from storage.interfaces import CrossDomainStore
from storage.memory import open_memory_stores
from storage.stores import Stores
from tests.server.routers import build_router, call_checked, connect, login, split

USERS = 3
A, B, C = 0, 1, 2
DEVICES = (2, 2, 1)
FRAME_DEADLINE = 5.0
#: Examples of the default profile; a long hunt sets RIVET_DELIVERY_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("RIVET_DELIVERY_FUZZ_EXAMPLES", "250"))
#: The stores under test: ``memory`` (default) or ``sqlite`` (RIVET_DELIVERY_FUZZ_STORE).
STORE = os.environ.get("RIVET_DELIVERY_FUZZ_STORE", "memory")

#: Which conversation an op acts in, for its user: the single chat A-B (C is not in it),
#: the user's chat with themselves, the group, another user's chat with themselves.
DIRECT, SELF, GROUP, OTHERS_SELF = 0, 1, 2, 3
#: The target of an ``add`` that stands for the group's first former member (if any): a
#: rejoin is drawn often enough only if it need not guess who left.
FORMER = -1

user = st.integers(min_value=0, max_value=USERS - 1)
conv = st.sampled_from([DIRECT, DIRECT, SELF, GROUP, GROUP, GROUP, OTHERS_SELF])
device = st.sampled_from([(u, d) for u in range(USERS) for d in range(DEVICES[u])])
small = st.integers(min_value=0, max_value=7)
#: The id of the first group of a fresh store (its event arrives with the reply).
GROUP_ID = "g:1"


def _send() -> st.SearchStrategy[tuple[Any, ...]]:
    modes = st.sampled_from(["new", "new", "new", "resend", "other"])
    return st.tuples(st.just("send"), user, conv, modes, small)


def _read() -> st.SearchStrategy[tuple[Any, ...]]:
    targets = st.sampled_from(["last", "beyond", "back", "same", "zero", "at"])
    return st.tuples(st.just("read"), user, conv, targets, small)


def _recall() -> st.SearchStrategy[tuple[Any, ...]]:
    # Mostly one of the user's own messages (the sender's recall).
    targets = st.sampled_from(["own", "own", "near", "beyond"])
    return st.tuples(st.just("recall"), user, conv, targets, small)


def _page() -> st.SearchStrategy[tuple[Any, ...]]:
    # The k-th device that is catching up fetches a page of 1-3 events.
    return st.tuples(st.just("page"), small, st.integers(min_value=1, max_value=3))


# Distinct strategy objects, so that sends, reads and pages are drawn more often.
OPS = st.one_of(
    _send(),
    _send(),
    _send(),
    _read(),
    _read(),
    _recall(),
    _recall(),
    _page(),
    _page(),
    _page(),
    st.tuples(st.just("offline"), device),
    st.tuples(st.just("online"), device),
    st.tuples(st.just("reconnect"), device),
    st.tuples(st.just("leave"), user),
    st.tuples(st.just("leave"), user),
    st.tuples(st.just("add"), user, user),
    st.tuples(st.just("add"), user, st.just(FORMER)),
    st.tuples(st.just("add"), st.just(A), st.just(FORMER)),
    st.tuples(st.just("tick"), st.sampled_from([1, 3600, 12 * 3600, 24 * 3600])),
    st.tuples(st.just("flush")),
    st.tuples(st.just("history"), user, conv),
    st.tuples(st.just("settings"), user, st.one_of(st.none(), conv), st.booleans()),
    st.tuples(st.just("summary"), user),
    st.tuples(st.just("receipts"), user, conv, small),
)


# --- the model --------------------------------------------------------------------------------


@dataclass
class MEntry:
    """A message or system entry of a conversation."""

    seq: int
    stream: int
    kind: str
    sender: int
    ts: int
    cmid: str | None = None
    text: str | None = None
    recalled: bool = False
    #: The stream position of the first recall of this message.
    recall_stream: int | None = None


@dataclass
class Row:
    """A user's membership, as the docs describe it."""

    visible_from: int = 1
    left_seq: int | None = None
    read_seq: int = 0
    role: str = "member"
    #: Every (from, to) range of seqs the user could see, one per membership.
    spans: list[tuple[int, int | None]] = field(default_factory=lambda: [(1, None)])

    @property
    def active(self) -> bool:
        return self.left_seq is None

    def sees(self, seq: int) -> bool:
        """The visibility rule (``CrossDomainStore``, ``Member.sees``): whether the user was a
        member when ``seq`` was posted, in any of their memberships (M1: one added back to a
        group that hides its history sees what they saw before, not what was said while
        they were away)."""
        return any(low <= seq and (high is None or seq <= high) for low, high in self.spans)

    def first_seen_after(self, seq: int) -> int | None:
        """The lowest seq above ``seq`` the user sees (None: none up to where they left)."""
        for low, high in self.spans:
            if high is None or high > seq:
                return max(low, seq + 1)
        return None


@dataclass
class MConv:
    conv_id: str
    kind: str
    #: Who takes part (a single chat's rows exist from its first message on).
    participants: tuple[int, ...]
    entries: list[MEntry] = field(default_factory=list)
    rows: dict[int, Row] = field(default_factory=dict)
    last_stream: int = 0

    @property
    def exists(self) -> bool:
        return bool(self.entries)

    @property
    def last_seq(self) -> int:
        return len(self.entries)

    def entry(self, seq: int) -> MEntry | None:
        return self.entries[seq - 1] if 1 <= seq <= len(self.entries) else None


@dataclass
class Durable:
    """One entry of the conversation stream."""

    stream: int
    conv: str
    kind: str  # message, system, recall, read
    seq: int
    sender: int
    ts: int


@dataclass
class Sent:
    conv: str
    cmid: str
    text: str
    seq: int
    stream: int
    ts: int


Signature = tuple[Any, ...]


@dataclass
class Settings:
    notifications: bool = True
    muted: set[str] = field(default_factory=set)


@dataclass
class Personal:
    """A settings change: one entry of its user's personal stream (``ev.settings``)."""

    pstream: int
    notifications: bool
    conv: str | None
    muted: bool | None

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "op": "ev.settings",
            "pstream": self.pstream,
            "notifications": self.notifications,
        }
        if self.conv is not None:
            event.update(conv=self.conv, conv_muted=self.muted)
        return event


@dataclass
class NewlyRead:
    """What read positions moved over in a group since the last receipt flush."""

    seqs: set[int] = field(default_factory=set)
    #: The smallest range holding them: the coalescer keeps one range per conversation
    #: (docs/delivery.md), so it may also report unchanged counts inside it.
    hull: tuple[int, int] | None = None


@dataclass
class Model:
    uids: list[int]
    convs: dict[str, MConv] = field(default_factory=dict)
    log: list[Durable] = field(default_factory=list)
    by_stream: dict[int, Durable] = field(default_factory=dict)
    #: uid -> the user's personal-stream entries (settings changes), ascending.
    personal: dict[int, list[Personal]] = field(default_factory=dict)
    settings: dict[int, Settings] = field(default_factory=dict)
    sent: dict[int, list[Sent]] = field(default_factory=dict)
    #: conv -> what was newly read by someone since the last receipt flush.
    newly_read: dict[str, NewlyRead] = field(default_factory=dict)
    texts: int = 0

    def unread(self, uid: int, conv: MConv) -> int:
        """Visible messages above the read position, in every membership's range (those of an
        earlier membership left unread still count), not the user's own, not recalled."""
        row = conv.rows[uid]
        top = conv.last_seq if row.left_seq is None else min(conv.last_seq, row.left_seq)
        return sum(
            1
            for seq in range(row.read_seq + 1, top + 1)
            if row.sees(seq)
            and (e := conv.entry(seq)) is not None
            and e.kind == "message"
            and e.sender != uid
            and not e.recalled
        )

    def read_range(self, conv: MConv, row: Row, before: int, to: int) -> None:
        """The messages a member's position moving from ``before`` to ``to`` newly read:
        those they can see above the old position (none from while they were away)."""
        first = row.first_seen_after(before)
        if first is None:
            return
        newly = self.newly_read.setdefault(conv.conv_id, NewlyRead())
        newly.seqs.update(seq for seq in range(first, to + 1) if row.sees(seq))
        if first <= to:
            low, high = newly.hull or (first, to)
            newly.hull = (min(low, first), max(high, to))

    def server_sees(self, uid: int, d: Durable) -> bool:
        conv = self.convs[d.conv]
        row = conv.rows.get(uid)
        if row is None:
            return False
        if d.kind == "read" and d.sender != uid and conv.kind == "group":
            return False
        return row.sees(d.seq)

    def current_members(self, conv: MConv) -> set[int]:
        return {uid for uid, row in conv.rows.items() if row.active}

    def audience(self, conv: MConv, seq: int) -> list[int]:
        """Who a message's read counts are about: the current members other than its
        sender who can see it."""
        entry = conv.entry(seq)
        assert entry is not None
        return [
            uid
            for uid, row in conv.rows.items()
            if row.active and uid != entry.sender and row.sees(seq)
        ]

    def read_count(self, conv: MConv, seq: int) -> int:
        return sum(1 for uid in self.audience(conv, seq) if conv.rows[uid].read_seq >= seq)


# --- a device, as the SDK keeps it ------------------------------------------------------------


@dataclass
class ViewMsg:
    kind: str
    text: str | None
    recalled: bool


@dataclass
class Device:
    user: int
    index: int
    uid: int
    device_id: int
    conn: Connection | None
    token: str = ""
    catching_up: bool = False
    first_page: bool = False
    #: (conv, seq) -> the message as the device shows it, after de-duplication.
    msgs: dict[tuple[str, int], ViewMsg] = field(default_factory=dict)
    #: Stream positions of the recalls and reads applied (de-duplication).
    streams: set[int] = field(default_factory=set)
    #: Recalls this device could not be told live (its user had left): sync owes them.
    owed: set[tuple[str, int]] = field(default_factory=set)
    #: Live events received during this op, as they came and as signatures.
    inbox: list[dict[str, Any]] = field(default_factory=list)
    live: list[Signature] = field(default_factory=list)
    #: The last seq received live per conversation, this connection.
    live_last: dict[str, int] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        op = event["op"]
        if op == "ev.message":
            key = (event["conv"], event["seq"])
            if key not in self.msgs:
                content = event.get("content")
                kind = "system" if event.get("system") is not None else "message"
                text = content["text"] if content is not None else None
                self.msgs[key] = ViewMsg(kind, text, bool(event.get("recalled", False)))
        elif op == "ev.recall":
            if event["stream"] in self.streams:
                return
            self.streams.add(event["stream"])
            key = (event["conv"], event["seq"])
            self.owed.discard(key)
            shown = self.msgs.get(key)
            if shown is not None:
                shown.text = None
                shown.recalled = True
        elif op == "ev.read":
            self.streams.add(event["stream"])


class Run:
    def __init__(self, router: Router, clock: ManualClock, model: Model) -> None:
        self.router = router
        self.clock = clock
        self.model = model
        self.devices: list[Device] = []
        self.rid = 1000
        #: What the op just applied must push: uid -> signatures.
        self.expected: dict[int, Counter[Signature]] = {}
        self.head = 0
        self.phead = 0

    # plumbing

    @property
    def cross(self) -> CrossDomainStore:
        return self.router.ctx.stores.cross

    def device(self, user: int, index: int = 0) -> Device:
        return next(d for d in self.devices if d.user == user and d.index == index)

    def sender_device(self, user: int) -> Device | None:
        """An online device of ``user`` to send from (None: all offline)."""
        return next((d for d in self.devices if d.user == user and d.conn is not None), None)

    async def call(self, dev: Device, request: rq.Request) -> dict[str, Any]:
        assert dev.conn is not None
        self.rid += 1
        reply, events = await call_checked(
            self.router, dev.conn, request, rid=self.rid, deadline=FRAME_DEADLINE
        )
        dev.inbox.extend(events)
        return reply

    def drain(self, dev: Device) -> list[dict[str, Any]]:
        """Replies on the device's connection; its events go to the device."""
        assert dev.conn is not None
        replies, events = split(dev.conn)
        dev.inbox.extend(events)  # checked against the model once the op is applied to it
        return replies

    def receive_live(self, dev: Device, event: dict[str, Any]) -> None:
        op = event["op"]
        m = self.model
        if op == "ev.message":
            conv = m.convs[event["conv"]]
            entry = conv.entry(event["seq"])
            assert entry is not None, ("a live event of no entry", event)
            check_message(entry, event)
            assert not entry.recalled and not event.get("recalled"), event
            # Per conversation, in seq order, each once.
            last = dev.live_last.get(event["conv"], 0)
            assert event["seq"] > last, ("out of order or twice", dev.user, event, last)
            dev.live_last[event["conv"]] = event["seq"]
            dev.live.append(("message", event["conv"], event["seq"], event["stream"]))
        elif op == "ev.recall":
            dev.live.append(("recall", event["conv"], event["seq"], event["stream"], event["by"]))
        elif op == "ev.read":
            dev.live.append(
                (
                    "read",
                    event["conv"],
                    event["user"],
                    event["seq"],
                    event["stream"],
                    event.get("unread"),
                )
            )
        elif op == "ev.settings":
            dev.live.append(
                (
                    "settings",
                    event["pstream"],
                    event["notifications"],
                    event.get("conv"),
                    event.get("conv_muted"),
                )
            )
            return
        elif op == "ev.receipts":
            # Only on a flush, where ``flush`` checks them.
            raise AssertionError(("ev.receipts without a flush", dev.user, event))
        else:
            assert op == "ev.presence", event  # nothing else is expected here
            return
        # A live event is never the only copy (docs/delivery.md): sync returns it to this
        # user too.
        d = m.by_stream[event["stream"]]
        assert (d.conv, d.seq) == (event["conv"], event["seq"]), (event, d)
        assert m.server_sees(dev.uid, d), ("pushed live but never replayed by sync", dev.user, d)
        dev.apply(event)

    def push(self, uids: set[int] | list[int], signature: Signature) -> None:
        for uid in uids:
            self.expected.setdefault(uid, Counter())[signature] += 1

    async def appended(self, count: int) -> int:
        """The stream position of the entry the op appended (``count`` 1), checking that the
        op appended exactly ``count`` entries."""
        head = await self.cross.head()
        if count == 0:
            assert head == self.head, ("stored something", self.head, head)
        else:
            assert head == self.head + count, ("not one entry", self.head, head)
        self.head = head
        return head

    def record(self, conv: MConv, kind: str, seq: int, sender: int, stream: int) -> Durable:
        d = Durable(stream, conv.conv_id, kind, seq, sender, self.clock.now_ms())
        self.model.log.append(d)
        self.model.by_stream[stream] = d
        conv.last_stream = stream
        return d

    # ops

    async def apply(self, op: tuple[Any, ...]) -> None:
        self.expected = {}
        kind = op[0]
        if kind == "send":
            await self.send(*op[1:])
        elif kind == "read":
            await self.read(*op[1:])
        elif kind == "recall":
            await self.recall(*op[1:])
        elif kind == "offline":
            self.offline(self.device(*op[1]))
        elif kind == "online":
            await self.online(self.device(*op[1]))
        elif kind == "reconnect":
            self.offline(self.device(*op[1]))
            await self.online(self.device(*op[1]))
        elif kind == "page":
            waiting = [d for d in self.devices if d.conn is not None and d.catching_up]
            if waiting:
                await self.page(waiting[op[1] % len(waiting)], op[2])
        elif kind == "leave":
            await self.leave(op[1])
        elif kind == "add":
            await self.add(op[1], op[2])
        elif kind == "settings":
            await self.settings(op[1], op[2], op[3])
        elif kind == "receipts":
            await self.receipts(op[1], op[2], op[3])
        elif kind == "summary":
            await self.summary(op[1])
        elif kind == "tick":
            self.clock.advance(op[1])
        elif kind == "flush":
            await self.flush()
        else:
            await self.history(op[1], op[2])
        await self.appended(0)  # nothing else was stored
        assert await self.router.ctx.stores.personal.personal_head() == self.phead
        self.clock.advance(0.001)
        await self.check_delivery()

    def acting(self, user: int, index: int) -> tuple[Device, int, MConv] | None:
        """What an op of ``user`` on conversation ``index`` acts with: an online device of
        theirs, their user id and the conversation; None when every device is offline."""
        dev = self.sender_device(user)
        if dev is None:
            return None
        return dev, self.model.uids[user], self.conv_of(user, index)

    def conv_of(self, user: int, index: int) -> MConv:
        m = self.model
        if index == DIRECT:
            return m.convs[direct_conversation_id(m.uids[A], m.uids[B])]
        if index == GROUP:
            return m.convs[GROUP_ID]
        owner = user if index == SELF else (user + 1) % USERS
        return m.convs[self_conversation_id(m.uids[owner])]

    async def send(self, user: int, index: int, mode: str, k: int) -> None:
        m = self.model
        acting = self.acting(user, index)
        if acting is None:
            return
        dev, uid, conv = acting
        mine = m.sent.setdefault(uid, [])
        if mode != "new" and mine:
            original = mine[k % len(mine)]
            text = original.text if mode == "resend" else original.text + "!"
            target = m.convs[original.conv]
            reply = await self.call(
                dev,
                rq.MsgSend(
                    rid=0, conv=target.conv_id, cmid=original.cmid, content=rq.Content(text=text)
                ),
            )
            if mode == "resend":
                # The original ack, even if the sender may no longer write there.
                assert reply["op"] == "ok", (op_name(mode), reply)
                result = reply["result"]
                assert result["duplicate"] is True, reply
                assert (result["seq"], result["stream"], result["ts"], result["msg_id"]) == (
                    original.seq,
                    original.stream,
                    original.ts,
                    original.stream,
                ), (original, reply)
            else:
                # Another message under a used cmid: a conflict if the sender may write
                # there, else the refusal at hand.
                assert reply["op"] == "error", reply
                allowed = self.may_send(uid, target)
                code = ErrorCode.IDEMPOTENCY_CONFLICT if allowed else ErrorCode.NOT_FOUND
                assert reply["code"] == code, (reply, allowed)
            await self.appended(0)
            return
        m.texts += 1
        cmid = f"c{m.texts}"
        text = f"text {m.texts} from {user}"
        reply = await self.call(
            dev, rq.MsgSend(rid=0, conv=conv.conv_id, cmid=cmid, content=rq.Content(text=text))
        )
        if not self.may_send(uid, conv):
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            await self.appended(0)
            return
        assert reply["op"] == "ok", reply
        stream = await self.appended(1)
        now = self.clock.now_ms()
        if not conv.exists:
            conv.rows = {p: Row() for p in conv.participants}
        seq = conv.last_seq + 1
        entry = MEntry(seq, stream, "message", uid, now, cmid=cmid, text=text)
        conv.entries.append(entry)
        self.record(conv, "message", seq, uid, stream)
        row = conv.rows[uid]
        if row.sees(seq) and row.read_seq < seq:
            # The sender has seen what they wrote, and what came before it (no ev.read);
            # in a group the messages they newly read that way get read counts.
            if conv.kind == "group":
                m.read_range(conv, row, row.read_seq, seq - 1)
            row.read_seq = seq
        result = reply["result"]
        assert result == {
            "conv": conv.conv_id,
            "seq": seq,
            "msg_id": stream,
            "ts": now,
            "stream": stream,
            "duplicate": False,
        }, result
        mine.append(Sent(conv.conv_id, cmid, text, seq, stream, now))
        self.push(m.current_members(conv), ("message", conv.conv_id, seq, stream))

    def may_send(self, uid: int, conv: MConv) -> bool:
        if conv.kind != "group":
            return uid in conv.participants
        row = conv.rows.get(uid)
        return row is not None and row.active

    async def read(self, user: int, index: int, how: str, k: int) -> None:
        m = self.model
        acting = self.acting(user, index)
        if acting is None:
            return
        dev, uid, conv = acting
        row = conv.rows.get(uid)
        last = conv.last_seq
        position = row.read_seq if row is not None else 0
        seq = {
            "last": last,
            "beyond": last + 1 + k,
            "back": max(position - 1 - k, 0),
            "same": position,
            "zero": 0,
            "at": k,
        }[how]
        reply = await self.call(dev, rq.Read(rid=0, conv=conv.conv_id, seq=seq))
        if row is None or not row.active:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            return
        assert reply["op"] == "ok", reply
        # Forward only, up to the last seq, never onto what the member cannot see (from
        # before they joined, or while they were away).
        target = min(seq, last) if row.sees(seq) else 0
        before = row.read_seq
        if target > before:
            stream = await self.appended(1)
            row.read_seq = target
            self.record(conv, "read", target, uid, stream)
            unread = m.unread(uid, conv)
            self.push([uid], ("read", conv.conv_id, uid, target, stream, unread))
            if conv.kind == "direct":
                peers = set(conv.participants) - {uid}
                self.push(peers, ("read", conv.conv_id, uid, target, stream, None))
            if conv.kind == "group":
                m.read_range(conv, row, before, target)
        assert reply["result"] == {
            "conv": conv.conv_id,
            "seq": row.read_seq,
            "unread": m.unread(uid, conv),
        }, (reply, row, how, seq)
        assert row.read_seq >= before

    async def recall(self, user: int, index: int, how: str, k: int) -> None:
        m = self.model
        acting = self.acting(user, index)
        if acting is None:
            return
        dev, uid, conv = acting
        mine = m.sent.get(uid, [])
        if how == "own" and mine:
            # One of the user's own messages (the sender's recall).
            original = mine[k % len(mine)]
            conv, seq = m.convs[original.conv], original.seq
        elif how == "beyond":
            seq = conv.last_seq + 1 + k
        else:
            seq = max(conv.last_seq - k, 1)
        reply = await self.call(dev, rq.MsgRecall(rid=0, conv=conv.conv_id, seq=seq))
        row = conv.rows.get(uid)
        entry = conv.entry(seq)
        if (
            row is None
            or not row.active
            or entry is None
            or not row.sees(seq)
            or entry.kind != "message"
        ):
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            return
        admin = conv.kind == "group" and row.role in ("owner", "admin")
        if not admin and entry.sender != uid:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.FORBIDDEN, reply
            return
        if entry.recalled:
            # M4: recalling again returns the first recall (docs/protocol.md, msg.recall).
            assert reply["op"] == "ok", (reply, entry)
            assert reply["result"] == {
                "conv": conv.conv_id,
                "seq": seq,
                "stream": entry.recall_stream,
            }, reply
            return
        if not admin and self.clock.now_ms() - entry.ts > RECALL_WINDOW_MS:
            assert reply["op"] == "error", reply
            assert reply["code"] == ErrorCode.RECALL_WINDOW_PASSED, reply
            return
        assert reply["op"] == "ok", reply
        stream = await self.appended(1)
        entry.recalled = True
        entry.recall_stream = stream
        self.record(conv, "recall", seq, uid, stream)
        assert reply["result"] == {"conv": conv.conv_id, "seq": seq, "stream": stream}, reply
        # To the current members who can see the message (one added later to a group
        # hiding its history never saw it, and sync never replays it to them).
        current = {u for u in m.current_members(conv) if conv.rows[u].sees(seq)}
        self.push(current, ("recall", conv.conv_id, seq, stream, uid))
        # Former members are told by sync only (ev.recall goes to current members).
        for d in self.devices:
            row_d = conv.rows.get(d.uid)
            told_by_sync = d.conn is None or d.catching_up
            entitled = row_d is not None and row_d.sees(seq)
            if d.uid not in current and entitled and not told_by_sync:
                d.owed.add((conv.conv_id, seq))

    async def leave(self, user: int) -> None:
        m = self.model
        acting = self.acting(user, GROUP)
        if acting is None:
            return
        dev, uid, conv = acting
        row = conv.rows.get(uid)
        reply = await self.call(dev, rq.GroupLeave(rid=0, conv=conv.conv_id))
        if row is None or not row.active:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            return
        if row.role == "owner":
            assert reply["op"] == "error" and reply["code"] == ErrorCode.INVALID_STATE, reply
            return
        assert reply["op"] == "ok", reply
        seq = await self.system(conv, uid, reply)
        row.left_seq = seq
        row.spans[-1] = (row.spans[-1][0], seq)
        self.push(m.current_members(conv) | {uid}, ("message", conv.conv_id, seq, self.head))

    async def add(self, actor: int, target: int) -> None:
        m = self.model
        dev = self.sender_device(actor)
        if dev is None:
            return
        conv = self.conv_of(actor, GROUP)
        if target == FORMER:
            former = [u for u in range(USERS) if (r := conv.rows.get(m.uids[u])) and not r.active]
            if not former:
                return
            target = former[0]
        uid, other = m.uids[actor], m.uids[target]
        row = conv.rows.get(other)
        reply = await self.call(dev, rq.GroupAdd(rid=0, conv=conv.conv_id, users=[other]))
        actor_row = conv.rows.get(uid)
        if actor_row is None or not actor_row.active:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            return
        if row is not None and row.active:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.ALREADY_MEMBER, reply
            return
        assert reply["op"] == "ok", reply
        seq = await self.system(conv, uid, reply)
        # In: sees from this event on (the group hides history from new members); a
        # former member keeps what they had read and what they saw before (a new span).
        if row is None:
            conv.rows[other] = Row(visible_from=seq, spans=[(seq, None)])
        else:
            row.visible_from = seq
            row.left_seq = None
            row.spans.append((seq, None))
        self.push(m.current_members(conv), ("message", conv.conv_id, seq, self.head))

    async def system(self, conv: MConv, uid: int, reply: dict[str, Any]) -> int:
        stream = await self.appended(1)
        seq = conv.last_seq + 1
        conv.entries.append(MEntry(seq, stream, "system", uid, self.clock.now_ms()))
        self.record(conv, "system", seq, uid, stream)
        result = {k: reply["result"][k] for k in ("seq", "stream")}
        assert result == {"seq": seq, "stream": stream}, reply
        return seq

    async def flush(self) -> None:
        m = self.model
        newly, m.newly_read = m.newly_read, {}
        await self.router.ctx.receipts.flush()
        for dev in self.devices:
            if dev.conn is not None:
                self.drain(dev)
        for dev in self.devices:
            if dev.conn is None:
                continue  # ephemeral: lost while offline
            got: dict[str, dict[int, int]] = {}
            for event in dev.inbox:
                if event["op"] == "ev.receipts":
                    # One event per conversation and flush.
                    assert event["conv"] not in got, (dev.user, dev.inbox)
                    got[event["conv"]] = {c["seq"]: c["read"] for c in event["counts"]}
            dev.inbox = [e for e in dev.inbox if e["op"] != "ev.receipts"]
            for conv_id in set(got) | set(newly):
                conv = m.convs[conv_id]
                counts = got.get(conv_id, {})
                read = newly.get(conv_id, NewlyRead())
                # Every message of this user newly read by someone is reported ...
                for seq in read.seqs:
                    entry = conv.entry(seq)
                    assert entry is not None
                    if entry.kind == "message" and entry.sender == dev.uid and not entry.recalled:
                        assert seq in counts, ("no receipt", dev.user, seq, counts, read)
                # ... and only this user's messages, inside the dirty range, with the exact
                # count: the other members who can see it and read it.
                for seq, count in counts.items():
                    entry = conv.entry(seq)
                    assert entry is not None and entry.kind == "message", (seq, counts)
                    assert entry.sender == dev.uid and not entry.recalled, (dev.user, entry)
                    assert read.hull is not None and read.hull[0] <= seq <= read.hull[1], (
                        seq,
                        read,
                    )
                    assert count == m.read_count(conv, seq), (seq, count, conv.rows)

    async def history(self, user: int, index: int) -> None:
        acting = self.acting(user, index)
        if acting is None:
            return
        dev, uid, conv = acting
        row = conv.rows.get(uid)
        got: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            reply = await self.call(
                dev, rq.MsgHistory(rid=0, conv=conv.conv_id, before_seq=before, limit=2)
            )
            if row is None:
                if conv.kind != "group" and uid in conv.participants:
                    assert reply["op"] == "ok" and reply["result"]["messages"] == [], reply
                else:
                    assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND
                return
            assert reply["op"] == "ok", reply
            page = reply["result"]["messages"]
            got = page + got
            if not reply["result"]["more"]:
                break
            assert page, reply
            before = page[0]["seq"]
        top = conv.last_seq if row.left_seq is None else row.left_seq
        # Every membership's range (M1), nothing from while the member was away.
        visible = [seq for seq in range(1, top + 1) if row.sees(seq)]
        assert [e["seq"] for e in got] == visible, (got, row)
        for event in got:
            entry = conv.entry(event["seq"])
            assert entry is not None
            check_message(entry, event)

    def offline(self, dev: Device) -> None:
        if dev.conn is None:
            return
        self.drain(dev)
        self.router.ctx.hub.detach(dev.conn)
        self.router.forget(dev.conn)
        dev.conn = None

    async def online(self, dev: Device) -> None:
        if dev.conn is not None:
            return
        ctx = self.router.ctx
        stored_user = await ctx.stores.personal.get_user(dev.uid)
        stored_device = await ctx.stores.personal.get_device(dev.device_id)
        assert stored_user is not None and stored_device is not None
        tokens = await ctx.credentials.issue(ctx.stores, stored_user, stored_device)
        dev.conn = connect(queue_frames=4096)
        reply = await self.call(dev, rq.Hello(rid=0, version=1, token=tokens.access_token))
        assert reply["op"] == "ok", reply
        # Subscribed to live events before the first sync (docs/delivery.md, hand-over).
        ctx.hub.attach(dev.conn)
        dev.catching_up = True
        dev.first_page = True
        dev.live_last = {}

    async def page(self, dev: Device, limit: int) -> None:
        m = self.model
        summary = dev.first_page
        reply = await self.call(dev, rq.Sync(rid=0, token=dev.token, summary=summary, limit=limit))
        assert reply["op"] == "ok", reply
        result = reply["result"]
        token = SyncToken.decode(dev.token)
        nxt = SyncToken.decode(result["token"])
        # Conversation events ascending by stream, then personal ones by pstream.
        waiting = [d for d in m.log if d.stream > token.conversations and m.server_sees(dev.uid, d)]
        personal = [p for p in m.personal.get(dev.uid, []) if p.pstream > token.personal]
        events = result["events"]
        conversation_events = [e for e in events if "stream" in e]
        personal_events = events[len(conversation_events) :]
        assert [e["stream"] for e in conversation_events] == [d.stream for d in waiting[:limit]], (
            "not the next events after the token",
            events,
            waiting,
        )
        room = limit - len(conversation_events)
        assert [e["pstream"] for e in personal_events] == [p.pstream for p in personal[:room]], (
            "not the next personal events after the token",
            events,
            personal,
        )
        for event, d in zip(conversation_events, waiting, strict=False):
            check_durable(m, d, event)
        for event, p in zip(personal_events, personal, strict=False):
            assert event == p.event(), (event, p)
        assert nxt.conversations >= token.conversations and nxt.personal >= token.personal
        # The next page starts right after this one: nothing skipped, nothing repeated.
        assert [d.stream for d in waiting if d.stream <= nxt.conversations] == [
            e["stream"] for e in conversation_events
        ], (token, nxt, events)
        assert [p.pstream for p in personal if p.pstream <= nxt.personal] == [
            e["pstream"] for e in personal_events
        ], (token, nxt, events)
        if len(waiting) + len(personal) > limit:
            assert result["more"], result
        if not result["more"]:
            assert nxt.conversations == self.head, (nxt, self.head)
            assert nxt.personal == self.phead, (nxt, self.phead)
        if summary:
            self.check_summaries(dev, token.conversations, result["summaries"])
        else:
            assert result["summaries"] == [], result
        for event in conversation_events:
            dev.apply(event)
        dev.token = result["token"]
        dev.first_page = False
        if not result["more"]:
            dev.catching_up = False
            assert not dev.owed, ("recalls sync never delivered", dev.owed)

    async def receipts(self, user: int, index: int, k: int) -> None:
        """``receipts.counts`` of every seq, and ``receipts.members`` of one message: the
        current members other than its sender who can see it, read or not."""
        m = self.model
        acting = self.acting(user, index)
        if acting is None:
            return
        dev, uid, conv = acting
        row = conv.rows.get(uid)
        seqs = list(range(1, conv.last_seq + 2))
        reply = await self.call(dev, rq.ReceiptCounts(rid=0, conv=conv.conv_id, seqs=seqs))
        if row is None:
            assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
            return
        assert reply["op"] == "ok", reply
        want = []
        for seq in seqs:
            entry = conv.entry(seq)
            if entry is not None and entry.kind == "message" and row.sees(seq):
                audience = m.audience(conv, seq)
                read = m.read_count(conv, seq)
                want.append({"seq": seq, "read": read, "unread": len(audience) - read})
        assert reply["result"]["counts"] == want, (reply, want)
        seq = max(conv.last_seq - k, 1)
        for read_flag in (True, False):
            reply = await self.call(
                dev, rq.ReceiptMembers(rid=0, conv=conv.conv_id, seq=seq, read=read_flag)
            )
            if not row.sees(seq):
                assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
                return
            assert reply["op"] == "ok", reply
            entry = conv.entry(seq)
            assert entry is not None
            users = sorted(
                u
                for u in m.audience(conv, seq)
                if (conv.rows[u].read_seq >= seq) == read_flag and entry.kind == "message"
            )
            assert reply["result"]["users"] == users, (reply, users, read_flag)

    async def summary(self, user: int) -> None:
        """A new device's first sync (no token): every conversation's summary, no events,
        the token at the heads."""
        dev = self.sender_device(user)
        if dev is None:
            return
        reply = await self.call(dev, rq.Sync(rid=0, token=None))
        assert reply["op"] == "ok", reply
        result = reply["result"]
        assert result["events"] == [] and not result["more"], result
        assert SyncToken.decode(result["token"]) == SyncToken(self.head, self.phead), result
        self.check_summaries(dev, 0, result["summaries"])

    async def settings(self, user: int, index: int | None, flag: bool) -> None:
        m = self.model
        dev = self.sender_device(user)
        if dev is None:
            return
        uid = m.uids[user]
        mine = m.settings.setdefault(uid, Settings())
        if index is None:
            reply = await self.call(dev, rq.SettingsSet(rid=0, notifications=flag))
            conv_id = None
        else:
            conv = self.conv_of(user, index)
            conv_id = conv.conv_id
            reply = await self.call(dev, rq.ConvMute(rid=0, conv=conv_id, muted=flag))
            if uid not in conv.rows:
                assert reply["op"] == "error" and reply["code"] == ErrorCode.NOT_FOUND, reply
                return
        assert reply == {"op": "ok", "rid": self.rid, "result": {}}, reply
        pstream = await self.personal_appended()
        if conv_id is None:
            mine.notifications = flag
        else:
            (mine.muted.add if flag else mine.muted.discard)(conv_id)
        change = Personal(pstream, mine.notifications, conv_id, None if conv_id is None else flag)
        m.personal.setdefault(uid, []).append(change)
        self.push([uid], ("settings", pstream, change.notifications, conv_id, change.muted))

    async def personal_appended(self) -> int:
        head = await self.router.ctx.stores.personal.personal_head()
        assert head == self.phead + 1, ("not one personal entry", self.phead, head)
        self.phead = head
        return head

    def check_summaries(self, dev: Device, after: int, summaries: list[dict[str, Any]]) -> None:
        m = self.model
        changed = {
            c.conv_id: c for c in m.convs.values() if dev.uid in c.rows and c.last_stream > after
        }
        assert sorted(s["conv"] for s in summaries) == sorted(changed), (summaries, changed)
        # Newest activity first: the last message's time, or the conversation's creation.
        activity = [
            s["last_message"]["ts"] if s.get("last_message") else changed[s["conv"]].entries[0].ts
            for s in summaries
        ]
        assert activity == sorted(activity, reverse=True), summaries
        for s in summaries:
            conv = changed[s["conv"]]
            row = conv.rows[dev.uid]
            top = conv.last_seq if row.left_seq is None else row.left_seq
            assert s["unread"] == m.unread(dev.uid, conv), (s, row)
            assert s["read_seq"] == row.read_seq, (s, row)
            assert s["last_seq"] == top, (s, row)
            assert s.get("left", False) == (not row.active), s
            muted = conv.conv_id in m.settings.get(dev.uid, Settings()).muted
            assert s["muted"] == muted, (s, m.settings)
            last = s.get("last_message")
            if top >= row.visible_from:
                assert last is not None and last["seq"] == top, s
                entry = conv.entry(top)
                assert entry is not None
                check_message(entry, last)
            else:
                assert last is None, s

    async def check_delivery(self) -> None:
        """Every online device got exactly the op's live events; every online device that
        caught up shows exactly what its user may see."""
        m = self.model
        for dev in self.devices:
            if dev.conn is not None:
                self.drain(dev)
            for event in dev.inbox:
                self.receive_live(dev, event)
            dev.inbox = []
            if dev.conn is None:
                assert not dev.live, dev.live
                continue
            want = self.expected.get(dev.uid, Counter())
            got = Counter(dev.live)
            assert got == want, ("live events", dev.user, dev.index, got, want)
            dev.live = []
        for dev in self.devices:
            if dev.conn is None or dev.catching_up:
                continue
            want_keys = {
                (c.conv_id, e.seq)
                for c in m.convs.values()
                if dev.uid in c.rows
                for e in c.entries
                if c.rows[dev.uid].sees(e.seq)
            }
            assert set(dev.msgs) == want_keys, (
                "the device's messages",
                dev.user,
                dev.index,
                sorted(set(dev.msgs) - want_keys),
                sorted(want_keys - set(dev.msgs)),
            )
            for (conv_id, seq), shown in dev.msgs.items():
                entry = m.convs[conv_id].entry(seq)
                assert entry is not None
                assert shown.kind == entry.kind, (shown, entry)
                if entry.recalled and (conv_id, seq) not in dev.owed:
                    assert shown.recalled and shown.text is None, (dev.user, shown, entry)
                else:
                    assert not shown.recalled and shown.text == entry.text, (shown, entry)


def op_name(mode: str) -> str:
    return f"send ({mode})"


def check_message(entry: MEntry, event: dict[str, Any]) -> None:
    """An ``ev.message`` (live, in a page, in history or a summary) against the model."""
    assert event["op"] == "ev.message", event
    assert (event["seq"], event["stream"], event["msg_id"]) == (
        entry.seq,
        entry.stream,
        entry.stream,
    ), (event, entry)
    assert (event["sender"], event["ts"]) == (entry.sender, entry.ts), (event, entry)
    assert event.get("cmid") == entry.cmid, (event, entry)
    if entry.kind == "system":
        assert event.get("system") is not None and event.get("content") is None, event
    elif entry.recalled:
        # M4: a recalled message's content is never served again.
        assert event.get("recalled") is True and event.get("content") is None, (event, entry)
    else:
        assert event.get("content", {}).get("text") == entry.text, (event, entry)
        assert not event.get("recalled", False), event


def check_durable(m: Model, d: Durable, event: dict[str, Any]) -> None:
    """An event of a sync page against the stream entry it must be."""
    assert event["stream"] == d.stream and event["conv"] == d.conv, (event, d)
    if d.kind in ("message", "system"):
        entry = m.convs[d.conv].entry(d.seq)
        assert entry is not None
        check_message(entry, event)
    elif d.kind == "recall":
        assert event == {
            "op": "ev.recall",
            "stream": d.stream,
            "conv": d.conv,
            "seq": d.seq,
            "by": d.sender,
            "ts": d.ts,
        }, (event, d)
    else:
        # Replayed, a read position has no unread count (the summaries carry it).
        assert event == {
            "op": "ev.read",
            "stream": d.stream,
            "conv": d.conv,
            "user": d.sender,
            "seq": d.seq,
        }, (event, d)


@asynccontextmanager
async def _stores() -> AsyncIterator[Stores]:
    if STORE == "memory":
        async with open_memory_stores() as stores:
            yield stores
        return
    from storage.sqlite import open_sqlite_stores

    with tempfile.TemporaryDirectory() as root:
        async with open_sqlite_stores(Path(root) / "data") as stores:
            yield stores


async def _run(ops: list[tuple[Any, ...]]) -> None:
    config = Config(
        store="memory", send_rate_per_second=10_000, send_burst=10_000, request_burst=100_000
    )
    clock = ManualClock()
    async with _stores() as stores:
        router = build_router(config, stores, clock=clock)
        ctx = router.ctx
        conns = [connect(queue_frames=4096) for _ in range(USERS)]
        uids = [await login(router, conn, f"+1555030000{i}") for i, conn in enumerate(conns)]
        model = Model(uids=uids)
        run = Run(router, clock, model)
        for u in range(USERS):
            for d in range(DEVICES[u]):
                if d == 0:
                    conn = conns[u]
                    assert conn.device_id is not None
                    dev = Device(u, d, uids[u], conn.device_id, conn)
                else:
                    stored = await stores.personal.get_user(uids[u])
                    assert stored is not None
                    issued = await ctx.credentials.issue_for_new_device(
                        stores, stored, device_name=f"device {d}"
                    )
                    dev = Device(u, d, uids[u], int(str(issued["device_id"])), connect(4096))
                    reply = await run.call(
                        dev, rq.Hello(rid=0, version=1, token=str(issued["access_token"]))
                    )
                    assert reply["op"] == "ok", reply
                assert dev.conn is not None
                ctx.hub.attach(dev.conn)
                run.devices.append(dev)
        for dev in run.devices:
            # A new device starts from the summaries, at the head (nothing yet).
            reply = await run.call(dev, rq.Sync(rid=0, token=None))
            assert reply["op"] == "ok" and reply["result"]["summaries"] == [], reply
            assert reply["result"]["events"] == [], reply
            dev.token = reply["result"]["token"]
        run.head = await stores.cross.head()
        run.phead = await stores.personal.personal_head()
        assert run.head == 0
        direct = MConv(direct_conversation_id(uids[A], uids[B]), "direct", (uids[A], uids[B]))
        selves = [MConv(self_conversation_id(uid), "self", (uid,)) for uid in uids]
        group = MConv(GROUP_ID, "group", tuple(uids))
        model.convs = {c.conv_id: c for c in (direct, *selves, group)}
        created = await run.call(
            run.devices[0],
            rq.GroupCreate(rid=0, cmid="g", title="crew", members=[uids[B]]),
        )
        assert created["op"] == "ok", created
        assert created["result"]["conv"]["conv"] == group.conv_id, created
        # C joins later (``add``).
        group.rows = {uids[A]: Row(role="owner"), uids[B]: Row()}
        seq = await run.system(group, uids[A], created)
        run.push({uids[A], uids[B]}, ("message", group.conv_id, seq, run.head))
        await run.check_delivery()
        for op in ops:
            await run.apply(op)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=st.lists(OPS, min_size=10, max_size=80))
# A device that was offline catches up in pages of one while the others keep talking.
@example(
    ops=[
        ("offline", (B, 1)),
        ("send", A, DIRECT, "new", 0),
        ("send", B, GROUP, "new", 0),
        ("read", B, DIRECT, "beyond", 2),
        ("online", (B, 1)),
        ("page", 0, 1),
        ("send", A, GROUP, "new", 0),
        ("recall", B, GROUP, "own", 0),
        ("page", 0, 1),
        ("settings", B, GROUP, True),
        ("page", 0, 1),
        ("page", 0, 3),
        ("page", 0, 3),
    ]
)
# M4, found by this test: recalling a recalled message again after the 24-hour window was
# refused with recall_window_passed; the docs say it returns the first recall
# (docs/protocol.md, msg.recall; docs/delivery.md). Fixed in ``services.messages.recall``.
@example(
    ops=[
        ("send", A, DIRECT, "new", 0),
        ("recall", A, DIRECT, "own", 0),
        ("tick", 24 * 3600),
        ("tick", 1),
        ("recall", A, DIRECT, "own", 0),
    ]
)
# M1/M4, found by this test: a recall of a message from before C joined (the group hides
# its history) was pushed live to C, who never saw the message and to whom sync never
# replays that recall (the store's visibility rule; group.add: "they see messages from
# this event on"). Fixed: a recall goes to the current members who can see the message.
@example(ops=[("send", A, GROUP, "new", 0), ("add", A, C), ("recall", A, GROUP, "own", 0)])
# Found by this test: C, added at seq 2, could move their read position to seq 1, which
# they cannot see: the ev.read was pushed live and never replayed by sync (docs/delivery.md:
# live events are never the only copy). Fixed: such a read moves nothing.
@example(ops=[("add", A, C), ("read", C, GROUP, "at", 1)])
# Found by this test: a message moves its sender's read position over the others' messages
# (``append``), but their senders got no ev.receipts for the new counts (docs/delivery.md,
# read receipts). Fixed: ``services.messages.send`` marks that range dirty as a read does.
@example(ops=[("send", A, GROUP, "new", 0), ("send", B, GROUP, "new", 0), ("flush",)])
def test_every_device_ends_with_exactly_what_it_may_see(ops: list[tuple[Any, ...]]) -> None:
    trio.run(_run, ops)


# M1/M4, once a known bug: a membership row kept one visible range, so being added back to
# a group that hides its history replaced the range of the earlier membership
# (``visible_from`` became the new join point). Sync then never returned what was posted
# during the earlier membership to a device that was offline at the time, though other
# devices of the same user got it live (docs/delivery.md: "everything durable ... comes back
# through sync"); and a later recall of such a message reached none of the user's devices,
# which kept its content. Fixed: the stores keep the earlier ranges (``Member.earlier``) and
# every visibility rule reads them all. The later cases pin the other readers of the ranges
# across the gap: history, unread counts, reads onto an earlier range or into the gap,
# receipts and their flush.
@pytest.mark.parametrize(
    "ops",
    [
        [
            ("offline", (B, 1)),
            ("send", A, GROUP, "new", 0),
            ("leave", B),
            ("add", A, B),
            ("online", (B, 1)),
            ("page", 0, 3),
            ("page", 0, 3),
        ],
        [
            ("send", A, GROUP, "new", 0),
            ("leave", B),
            ("add", A, B),
            ("offline", (B, 1)),
            ("recall", A, GROUP, "own", 0),
            ("online", (B, 1)),
            ("page", 0, 3),
            ("page", 0, 3),
        ],
        [
            ("send", A, GROUP, "new", 0),
            ("send", A, GROUP, "new", 0),
            ("read", B, GROUP, "at", 2),
            ("leave", B),
            ("send", A, GROUP, "new", 0),
            ("add", A, B),
            ("send", A, GROUP, "new", 0),
            ("summary", B),
            ("history", B, GROUP),
            ("receipts", A, GROUP, 3),
            ("read", B, GROUP, "at", 6),
            ("read", B, GROUP, "at", 3),
            ("flush",),
            ("receipts", B, GROUP, 5),
            ("read", B, GROUP, "last", 0),
            ("flush",),
            ("summary", B),
        ],
        [
            ("send", B, GROUP, "new", 0),
            ("leave", B),
            ("send", A, GROUP, "new", 0),
            ("add", A, B),
            ("leave", B),
            ("add", A, B),
            ("send", B, GROUP, "new", 0),
            ("recall", B, GROUP, "own", 0),
            ("history", B, GROUP),
            ("history", C, GROUP),
            ("add", B, C),
            ("receipts", C, GROUP, 4),
            ("summary", B),
        ],
    ],
)
def test_a_rejoined_member_loses_nothing(ops: list[tuple[Any, ...]]) -> None:
    trio.run(_run, ops)
