"""Rivet workloads for the load workers (see ``bench.loadgen``), speaking Rivet's protocol.

Each mirrors a bare workload of ``bench.workloads`` (same control exchange with the
orchestrator, so ``bench.patterns`` measures both alike), over authenticated connections
with tokens made by ``rivet users bulk`` (``ctx.params["tokens"]`` and the like):

* ``direct``: pairs of users chatting 1:1 (``msg.send`` into their single chat), each
  connection with at most ``window`` messages not yet acknowledged. The ack comes only
  after the commit; the unit is a message delivered to the peer, and latency is send to
  delivery. Every message must be acknowledged once and delivered to the peer once.
* ``group_publisher`` / ``group_member``: one member sends to a group (window held to the
  members' watermarks, as the bare publisher), every other member counts every delivery.
* ``idle``: opens and authenticates ``connections`` connections at the go signal, holds
  them until told to close (the ``connect_storm`` pattern).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from bench.loadgen import WorkerContext, sleep_until_ns
from bench.rivet_client import (
    Frame,
    RequestFailed,
    Wire,
    padding,
    probe_id,
    probe_sent_ns,
    probe_text,
)
from bench.workloads import CLOSE_TIMEOUT, MAX_ERRORS_KEPT, SeqTracker, Tally, _Completion, _Gate
from protocol import requests as rq
from protocol.ids import direct_conversation_id

CONNECT_CONCURRENCY = 64


async def _open_all(
    nursery: trio.Nursery,
    ctx: WorkerContext,
    tokens: Sequence[str],
    handlers: Sequence[Any],
) -> list[Wire]:
    """Open and authenticate one connection per token, 64 at a time, in order."""
    wires: list[Wire | None] = [None] * len(tokens)
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            wires[i] = await Wire.open(nursery, ctx.url, tokens[i], handlers[i])

    with trio.fail_after(ctx.params["connect_timeout"]):
        async with trio.open_nursery() as opening:
            for i in range(len(tokens)):
                opening.start_soon(one, i)
    return [w for w in wires if w is not None]


async def _close_all(wires: Sequence[Wire]) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT):
        async with trio.open_nursery() as closing:
            for wire in wires:
                closing.start_soon(wire.ws.aclose)


# --- direct: pairs chatting 1:1 -------------------------------------------------------------


class _Side:
    """One connection of a pair: what it sent, which acks and deliveries came back."""

    def __init__(self, conn_id: int, user_id: int, peer_id: int, window: int) -> None:
        self.conn_id = conn_id
        self.user_id = user_id
        self.conv = direct_conversation_id(user_id, peer_id)
        self.window = trio.Semaphore(window)
        self.sent = 0
        self.sending = True
        self.rids: dict[int, tuple[int, int]] = {}  # rid -> (n, sent_ns)
        self.acks = SeqTracker()
        self.delivered = SeqTracker()  # the peer's messages, by n
        self.ack_latency = array("q")
        self.own_echoes = 0
        self.unknown_acks = 0
        self.errors = 0
        self.misrouted = 0
        self.phase = 0.0
        self.peer: _Side
        self.wire: Wire


class _Pair:
    def __init__(self, ctx: WorkerContext, a: _Side, b: _Side, tally: Tally) -> None:
        self.ctx = ctx
        self.sides = (a, b)
        self.tally = tally
        self.done = trio.Event()

    def check(self) -> None:
        a, b = self.sides
        if (
            not a.sending
            and not b.sending
            and a.acks.unique >= a.sent
            and b.acks.unique >= b.sent
            and a.delivered.unique >= b.sent
            and b.delivered.unique >= a.sent
        ):
            self.done.set()

    def handler(self, side: _Side) -> Any:
        ctx, tally = self.ctx, self.tally
        recorder = ctx.recorder

        def on_frame(frame: Frame, now: int) -> None:
            if frame.op == "ok":
                sent = side.rids.pop(frame.rid or 0, None)
                if sent is None:
                    side.unknown_acks += 1
                    return
                n, sent_ns = sent
                if side.acks.add(n):
                    side.ack_latency.append(now - sent_ns)
                    side.window.release()
                    self.check()
            elif frame.op == "ev.message":
                if frame.sender == side.user_id:
                    side.own_echoes += 1  # the sender's own devices get the event too
                    return
                if frame.conv != side.conv or frame.cmid is None:
                    side.misrouted += 1
                    return
                conn, n = probe_id(frame.cmid)
                if conn != side.peer.conn_id:
                    side.misrouted += 1
                    return
                if side.delivered.add(n):
                    recorder.record(probe_sent_ns(frame), now)
                    ctx.count()
                    tally.last_received_ns = max(tally.last_received_ns, now)
                    self.check()
            elif frame.op == "error":
                side.errors += 1

        return on_frame


async def _send_loop(ctx: WorkerContext, side: _Side, pair: _Pair, go: dict[str, Any]) -> None:
    p = ctx.params
    limit: int | None = p["messages"]
    rate: float | None = p["rate"]
    stop_ns: int | None = go["stop_ns"]
    start_ns: int = go["start_ns"]
    pad = padding(p["payload_size"])
    wire = side.wire
    # ``rate`` is per pair: each side sends half of it, the two sides out of phase.
    interval_ns = int(2e9 / rate) if rate else 0
    offset_ns = int(interval_ns * side.phase)
    await sleep_until_ns(start_ns + offset_ns)
    try:
        while limit is None or side.sent < limit:
            if interval_ns:
                stamp = start_ns + offset_ns + side.sent * interval_ns
                if stop_ns is not None and stamp >= stop_ns:
                    break
                await sleep_until_ns(stamp)
                await side.window.acquire()
            else:
                await side.window.acquire()
                stamp = time.monotonic_ns()
                if stop_ns is not None and stamp >= stop_ns:
                    break
            n = side.sent
            request = rq.MsgSend(
                rid=0,
                conv=side.conv,
                cmid=f"{side.conn_id}.{n}",
                content=rq.Content(text=probe_text(stamp, pad)),
            )
            rid = wire.next_rid()
            side.rids[rid] = (n, stamp)
            await wire.send(request, rid)
            side.sent += 1
    finally:
        side.sending = False
        pair.check()


async def direct(ctx: WorkerContext) -> dict[str, Any]:
    """``params["pairs"]``: ``[token_a, user_a, token_b, user_b]`` for each of this worker's
    pairs; pair ``conn_base + i`` has connections ``2 * (conn_base + i)`` and ``+ 1``."""
    p = ctx.params
    tally = Tally(connections=2 * len(p["pairs"]))
    pairs: list[_Pair] = []
    sides: list[_Side] = []
    tokens: list[str] = []
    handlers: list[Any] = []
    count = len(p["pairs"])
    for i, (token_a, user_a, token_b, user_b) in enumerate(p["pairs"]):
        base = 2 * (p["conn_base"] + i)
        a = _Side(base, user_a, user_b, p["window"])
        b = _Side(base + 1, user_b, user_a, p["window"])
        a.peer, b.peer = b, a
        a.phase, b.phase = i / count / 2, 0.5 + i / count / 2
        pair = _Pair(ctx, a, b, tally)
        pairs.append(pair)
        sides += [a, b]
        tokens += [token_a, token_b]
        handlers += [pair.handler(a), pair.handler(b)]
    async with trio.open_nursery() as nursery:
        wires = await _open_all(nursery, ctx, tokens, handlers)
        for side, wire in zip(sides, wires, strict=True):
            side.wire = wire
        ctx.send("ready")
        go = await ctx.recv("go")
        async with trio.open_nursery() as load:
            for pair in pairs:
                for side in pair.sides:
                    load.start_soon(_send_loop, ctx, side, pair, go)
        with trio.move_on_after(p["drain_timeout"]):
            for pair in pairs:
                await pair.done.wait()
        await trio.sleep(p["settle"])  # late duplicates would show up here
        _direct_tally(tally, sides)
        ctx.send("finished", **tally.as_dict())
        await ctx.recv("close")
        await _close_all(wires)
        nursery.cancel_scope.cancel()
    latency = array("q")
    for side in sides:
        latency.extend(side.ack_latency)
    return {**tally.as_dict(), **_ack_counts(sides), "ack_latency_ns": latency}


def _direct_tally(tally: Tally, sides: Sequence[_Side]) -> None:
    for side in sides:
        tally.sent += side.sent
        tally.add_tracker(side.delivered, side.peer.sent)
        tally.misrouted += side.misrouted
        tally.corrupt += side.errors


def _ack_counts(sides: Sequence[_Side]) -> dict[str, int]:
    return {
        "acked": sum(s.acks.unique for s in sides),
        "unacked": sum(s.acks.missing(s.sent) for s in sides),
        "ack_duplicated": sum(s.acks.duplicates for s in sides),
        "ack_unexpected": sum(s.unknown_acks for s in sides),
        "own_echoes": sum(s.own_echoes for s in sides),
    }


# --- group: one publisher, every other member receives --------------------------------------


async def group_publisher(ctx: WorkerContext) -> dict[str, Any]:
    """Sends ``msg.send`` to ``params["conv"]``; an ack is the reply that releases the window
    (as the bare publisher's echo does), and the members' watermarks gate it end to end."""
    p = ctx.params
    readers: list[Connection] = ctx.spec.links["watermarks"]
    gate = _Gate(len(readers), p["window"])
    tally = Tally(connections=1)
    window = trio.Semaphore(p["window"])
    acks = SeqTracker()
    rids: dict[int, tuple[int, int]] = {}
    all_in = trio.Event()
    state = {"sent": 0, "sending": True, "errors": 0, "unknown": 0, "echoes": 0}
    recorder = ctx.recorder

    def on_frame(frame: Frame, now: int) -> None:
        if frame.op == "ok":
            sent = rids.pop(frame.rid or 0, None)
            if sent is None:
                state["unknown"] += 1
                return
            n, sent_ns = sent
            if acks.add(n):
                recorder.record(sent_ns, now)
                tally.last_received_ns = max(tally.last_received_ns, now)
                window.release()
                if not state["sending"] and acks.unique >= state["sent"]:
                    all_in.set()
        elif frame.op == "ev.message":
            state["echoes"] += 1
        elif frame.op == "error":
            state["errors"] += 1

    async with trio.open_nursery() as nursery:
        for source, reader in enumerate(readers):
            nursery.start_soon(gate.follow, source, reader)
        (wire,) = await _open_all(nursery, ctx, [p["token"]], [on_frame])
        ctx.send("ready")
        go = await ctx.recv("go")
        limit: int | None = p["messages"]
        rate: float | None = p["rate"]
        stop_ns: int | None = go["stop_ns"]
        start_ns: int = go["start_ns"]
        pad = padding(p["payload_size"])
        interval_ns = int(1e9 / rate) if rate else 0
        await sleep_until_ns(start_ns)
        while limit is None or state["sent"] < limit:
            n = state["sent"]
            if interval_ns:
                stamp = start_ns + n * interval_ns
                if stop_ns is not None and stamp >= stop_ns:
                    break
                await sleep_until_ns(stamp)
                await window.acquire()
                if not await gate.wait(n, p["drain_timeout"]):
                    break
            else:
                await window.acquire()
                if not await gate.wait(n, p["drain_timeout"]):
                    break
                stamp = time.monotonic_ns()
                if stop_ns is not None and stamp >= stop_ns:
                    break
            request = rq.MsgSend(
                rid=0,
                conv=p["conv"],
                cmid=f"0.{n}",
                content=rq.Content(text=probe_text(stamp, pad)),
            )
            rid = wire.next_rid()
            rids[rid] = (n, stamp)
            await wire.send(request, rid)
            state["sent"] += 1
        state["sending"] = False
        if acks.unique >= state["sent"]:
            all_in.set()
        with trio.move_on_after(p["drain_timeout"]):
            await all_in.wait()
        await trio.sleep(p["settle"])
        tally.sent = state["sent"]
        tally.add_tracker(acks, state["sent"])
        tally.unexpected += state["unknown"]
        tally.corrupt += state["errors"]
        ctx.send("finished", stalled=gate.stalled, **tally.as_dict())
        await ctx.recv("close")
        await _close_all([wire])
        nursery.cancel_scope.cancel()
    return {"stalled": gate.stalled, "own_echoes": state["echoes"], **tally.as_dict()}


async def group_member(ctx: WorkerContext) -> dict[str, Any]:
    """``params["tokens"]``: one member per connection; each counts every message of
    ``params["conv"]`` by the publisher's numbering and reports its watermark."""
    p = ctx.params
    tokens: list[str] = p["tokens"]
    n = len(tokens)
    tally = Tally(connections=n)
    trackers = [SeqTracker() for _ in tokens]
    completion = _Completion(trackers, ctx.spec.links.get("watermark"))
    conv: str = p["conv"]
    recorder = ctx.recorder
    live = {"on": False}

    def handler(tracker: SeqTracker) -> Any:
        def on_frame(frame: Frame, now: int) -> None:
            if frame.op != "ev.message" or frame.cmid is None:
                return  # other events, and system entries (membership changes)
            if frame.conv != conv or not frame.cmid.startswith("0."):
                tally.misrouted += 1
                return
            if tracker.add(probe_id(frame.cmid)[1]):
                recorder.record(probe_sent_ns(frame), now)
                ctx.count()
                tally.last_received_ns = max(tally.last_received_ns, now)
                if live["on"]:
                    completion.advanced(tracker)

        return on_frame

    async with trio.open_nursery() as nursery:
        wires = await _open_all(nursery, ctx, tokens, [handler(t) for t in trackers])
        ctx.send("ready")
        await ctx.recv("go")
        live["on"] = True
        expected = (await ctx.recv("stop"))["expected"]
        completion.expect(expected)
        with trio.move_on_after(p["drain_timeout"]):
            await completion.done.wait()
        await trio.sleep(p["settle"])
        tally.sent = expected * n
        for tracker in trackers:
            tally.add_tracker(tracker, expected)
        ctx.send("finished", **tally.as_dict())
        await ctx.recv("close")
        await _close_all(wires)
        nursery.cancel_scope.cancel()
    return tally.as_dict()


# --- idle authenticated connections ---------------------------------------------------------


async def idle(ctx: WorkerContext) -> dict[str, Any]:
    """``bench.workloads.storm`` with a ``hello`` carrying each connection's token; a
    connection counts once the server has authenticated it."""
    p = ctx.params
    tokens: list[str] = p["tokens"]
    n = len(tokens)
    wires: list[Wire] = []
    errors: list[str] = []
    failed = 0
    last_ns = 0
    async with trio.open_nursery() as nursery:
        ctx.send("ready")
        go = await ctx.recv("go")
        limiter = trio.CapacityLimiter(p["concurrency"] or n)

        async def one(token: str) -> None:
            nonlocal failed, last_ns
            async with limiter:
                began = time.monotonic_ns()
                try:
                    with trio.fail_after(p["connect_timeout"]):
                        wire = await Wire.open(nursery, ctx.url, token)
                except (
                    OSError,
                    HandshakeError,
                    ConnectionClosed,
                    RequestFailed,
                    trio.TooSlowError,
                ) as exc:
                    failed += 1
                    if len(errors) < MAX_ERRORS_KEPT:
                        errors.append(repr(exc))
                    return
                done = time.monotonic_ns()
                ctx.recorder.record(began, done)
                ctx.count()
                last_ns = max(last_ns, done)
                wires.append(wire)

        await sleep_until_ns(go["start_ns"])
        first_ns = time.monotonic_ns()
        async with trio.open_nursery() as opening:
            for token in tokens:
                opening.start_soon(one, token)
        result = {
            "connections": n,
            "established": len(wires),
            "failed": failed,
            "errors": errors,
            "first_attempt_ns": first_ns,
            "last_established_ns": last_ns,
        }
        ctx.send("finished", **result)
        await ctx.recv("close")
        await _close_all(wires)
        nursery.cancel_scope.cancel()
    return result
