"""The bare WebSocket clients the load workers run (see ``bench.loadgen``).

Every message is a MessagePack ``Probe``: ``[connection id, sequence number, send time,
padding]``, the send time being ``time.monotonic_ns()`` (one clock for every process), so
latency is receive time minus send time wherever the message is received. With ``rate``
set the send time is the *scheduled* time, so a client that falls behind its schedule
counts the delay as latency (no coordinated omission).

Each receiver keeps a bitmap of the sequence numbers it has seen, so the results say
exactly how many messages were lost, duplicated, or not expected at all.

Workloads:

* ``echo``: request/reply; each connection keeps at most ``window`` messages in flight.
* ``publisher``: ``echo`` on one connection (the replies are the server's
  acknowledgements), also held to at most ``window`` messages not yet delivered to every
  subscriber, from the subscriber workers' watermarks (``_Gate``).
* ``subscriber``: waits for the ``subscribed`` greeting, then counts every delivery (and
  reports its watermark) until the orchestrator says how many were published.
* ``storm``: opens ``connections`` connections all at once (or ``concurrency`` at a time),
  holds them idle until told to close.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from bench.loadgen import WorkerContext, sleep_until_ns

SUBSCRIBED = "subscribed"
MAX_ERRORS_KEPT = 5
CLOSE_TIMEOUT = 10.0
# Client-side receive queue: lets a client's reader task take every frame of one socket
# read before the consumer runs (trio-websocket's default of 1 costs two task switches per
# message, which makes the load generator, not the server, the bottleneck sooner).
CLIENT_QUEUE = 256


class Probe(msgspec.Struct, array_like=True):
    conn: int
    seq: int
    sent_ns: int
    pad: bytes = b""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Probe)


def encode_probe(probe: Probe) -> bytes:
    return _encoder.encode(probe)


def decode_probe(data: bytes | str) -> Probe:
    if isinstance(data, str):
        raise msgspec.DecodeError("expected a binary message, got text")
    return _decoder.decode(data)


def padding(payload_size: int) -> bytes:
    """Padding that brings a probe's encoded size to about ``payload_size`` bytes."""
    bare = len(encode_probe(Probe(2**31, 2**31, time.monotonic_ns(), b"")))
    return b"x" * max(payload_size - bare, 0)


class SeqTracker:
    """Which sequence numbers arrived, and how often beyond once."""

    def __init__(self) -> None:
        self._seen = bytearray()
        self.unique = 0
        self.duplicates = 0

    def add(self, seq: int) -> bool:
        """Note ``seq``; True the first time it is seen."""
        if seq < 0:
            raise ValueError(f"negative sequence number {seq}")
        if seq >= len(self._seen):
            self._seen.extend(bytes(max(seq + 1 - len(self._seen), len(self._seen), 64)))
        if self._seen[seq]:
            self.duplicates += 1
            return False
        self._seen[seq] = 1
        self.unique += 1
        return True

    def missing(self, expected: int) -> int:
        """How many of ``0 .. expected-1`` never arrived."""
        return expected - self._seen[:expected].count(1)

    def unexpected(self, expected: int) -> int:
        """How many sequence numbers at or beyond ``expected`` arrived."""
        return self._seen[expected:].count(1)


@dataclass
class Tally:
    """Correctness counts, summed over connections and workers."""

    connections: int = 0
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    misrouted: int = 0
    corrupt: int = 0
    last_received_ns: int = 0

    def add_tracker(self, tracker: SeqTracker, expected: int) -> None:
        self.received += tracker.unique
        self.duplicated += tracker.duplicates
        self.lost += tracker.missing(expected)
        self.unexpected += tracker.unexpected(expected)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _with_path(url: str, path: str) -> str:
    return url.rstrip("/") + path


async def open_connections(
    nursery: trio.Nursery, url: str, count: int, concurrency: int
) -> list[WebSocketConnection]:
    """Open ``count`` connections, ``concurrency`` at a time; any failure is fatal.

    The connections' background tasks run in ``nursery``; the caller bounds the time.
    """
    conns: list[WebSocketConnection] = []
    limiter = trio.CapacityLimiter(max(concurrency, 1))

    async def one() -> None:
        async with limiter:
            conns.append(await connect_websocket_url(nursery, url, message_queue_size=CLIENT_QUEUE))

    async with trio.open_nursery() as opening:
        for _ in range(count):
            opening.start_soon(one)
    return conns


async def close_connections(conns: Sequence[WebSocketConnection]) -> None:
    """Close every connection (close handshake), all at once; the caller bounds the time."""
    async with trio.open_nursery() as closing:
        for ws in conns:
            closing.start_soon(ws.aclose)


async def _open_bounded(
    nursery: trio.Nursery, ctx: WorkerContext, count: int
) -> list[WebSocketConnection]:
    p = ctx.params
    with trio.fail_after(p["connect_timeout"]):
        return await open_connections(nursery, _with_path(ctx.url, p["path"]), count, 64)


async def _close_bounded(conns: Sequence[WebSocketConnection]) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT):
        await close_connections(conns)


async def _echo_connection(
    ctx: WorkerContext,
    ws: WebSocketConnection,
    conn_id: int,
    phase: float,
    go: dict[str, Any],
    tally: Tally,
    gate: _Gate | None = None,
) -> None:
    p = ctx.params
    limit: int | None = p["messages"]
    rate: float | None = p["rate"]
    stop_ns: int | None = go["stop_ns"]
    start_ns: int = go["start_ns"]
    pad = padding(p["payload_size"])
    window = trio.Semaphore(p["window"])
    tracker = SeqTracker()
    all_in = trio.Event()
    sent = 0
    sending = True
    recorder = ctx.recorder

    async def receive() -> None:
        while True:
            data = await ws.get_message()
            now = time.monotonic_ns()
            try:
                probe = decode_probe(data)
            except msgspec.DecodeError:
                tally.corrupt += 1
                continue
            if probe.conn != conn_id:
                tally.misrouted += 1
                continue
            if tracker.add(probe.seq):
                recorder.record(probe.sent_ns, now)
                ctx.count()
                tally.last_received_ns = max(tally.last_received_ns, now)
                window.release()
                if not sending and tracker.unique >= sent:
                    all_in.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        interval_ns = int(1e9 / rate) if rate else 0
        offset_ns = int(interval_ns * phase)
        await sleep_until_ns(start_ns + offset_ns)
        while limit is None or sent < limit:
            if interval_ns:
                stamp = start_ns + offset_ns + sent * interval_ns
                if stop_ns is not None and stamp >= stop_ns:
                    break
                await sleep_until_ns(stamp)
                await window.acquire()
                if gate is not None and not await gate.wait(sent, p["drain_timeout"]):
                    break
            else:
                await window.acquire()
                if gate is not None and not await gate.wait(sent, p["drain_timeout"]):
                    break
                stamp = time.monotonic_ns()
                if stop_ns is not None and stamp >= stop_ns:
                    break
            await ws.send_message(encode_probe(Probe(conn_id, sent, stamp, pad)))
            sent += 1
        sending = False
        if tracker.unique >= sent:
            all_in.set()
        with trio.move_on_after(p["drain_timeout"]):
            await all_in.wait()
        await trio.sleep(p["settle"])  # late duplicates would show up here
        nursery.cancel_scope.cancel()
    tally.sent += sent
    tally.add_tracker(tracker, sent)


class _Gate:
    """End-to-end flow control for a publisher.

    Each subscriber worker reports its *watermark*: how many messages every one of its
    subscribers has received. Message ``seq`` may go out once ``seq < min(watermarks) +
    window``, so at most ``window`` messages are ever on their way to some subscriber and
    latency is not inflated by queues piling up in socket buffers.
    """

    def __init__(self, sources: int, window: int) -> None:
        self.marks = [0] * sources
        self.window = window
        self.stalled = False
        self._changed = trio.Event()

    def update(self, source: int, mark: int) -> None:
        if mark > self.marks[source]:
            self.marks[source] = mark
            self._changed.set()
            self._changed = trio.Event()

    async def wait(self, seq: int, limit_s: float) -> bool:
        """Wait until ``seq`` may be sent; False (and ``stalled``) after ``limit_s`` seconds."""
        with trio.move_on_after(limit_s):
            while seq >= min(self.marks, default=seq) + self.window:
                await self._changed.wait()
            return True
        self.stalled = True
        return False

    async def follow(self, source: int, reader: Connection) -> None:
        """Apply the watermarks arriving on ``reader`` until its writer closes."""
        while True:
            while not reader.poll():
                await trio.lowlevel.wait_readable(reader.fileno())
            try:
                data = reader.recv_bytes()
            except EOFError:
                return
            self.update(source, int.from_bytes(data, "little"))


async def publisher(ctx: WorkerContext) -> dict[str, Any]:
    """The echo workload on one connection, paced by the subscribers' watermarks."""
    p = ctx.params
    readers: list[Connection] = ctx.spec.links["watermarks"]
    gate = _Gate(len(readers), p["window"])
    tally = Tally(connections=1)
    async with trio.open_nursery() as nursery:
        for source, reader in enumerate(readers):
            nursery.start_soon(gate.follow, source, reader)
        (ws,) = await _open_bounded(nursery, ctx, 1)
        ctx.send("ready")
        go = await ctx.recv("go")
        await _echo_connection(ctx, ws, p["conn_base"], 0.0, go, tally, gate)
        ctx.send("finished", stalled=gate.stalled, **tally.as_dict())
        await ctx.recv("close")
        await _close_bounded([ws])
        nursery.cancel_scope.cancel()
    return {"stalled": gate.stalled, **tally.as_dict()}


async def echo(ctx: WorkerContext) -> dict[str, Any]:
    """Request/reply load on ``connections`` connections; see the module docstring."""
    p = ctx.params
    n = p["connections"]
    tally = Tally(connections=n)
    async with trio.open_nursery() as nursery:
        conns = await _open_bounded(nursery, ctx, n)
        ctx.send("ready")
        go = await ctx.recv("go")
        async with trio.open_nursery() as load:
            for i, ws in enumerate(conns):
                load.start_soon(_echo_connection, ctx, ws, p["conn_base"] + i, i / n, go, tally)
        ctx.send("finished", **tally.as_dict())
        await ctx.recv("close")
        await _close_bounded(conns)
        nursery.cancel_scope.cancel()
    return tally.as_dict()


class _Completion:
    """Tracks this worker's subscribers: the watermark, and when all have ``expected``.

    The watermark is how many messages *every* subscriber here has received (messages on
    one connection arrive in order, so a count of distinct ones is a prefix); each rise is
    written to ``watermark`` (the publisher's ``_Gate`` reads it).
    """

    def __init__(self, trackers: Sequence[SeqTracker], watermark: Connection | None) -> None:
        self.trackers = trackers
        self.watermark = watermark
        self.expected: int | None = None
        self.complete = 0
        self.done = trio.Event()
        self._reached: dict[int, int] = {}

    def expect(self, expected: int) -> None:
        self.expected = expected
        self.complete = sum(1 for t in self.trackers if t.unique >= expected)
        self._check()

    def advanced(self, tracker: SeqTracker) -> None:
        count = tracker.unique
        reached = self._reached.get(count, 0) + 1
        if reached == len(self.trackers):
            del self._reached[count]
            if self.watermark is not None:
                self.watermark.send_bytes(count.to_bytes(8, "little"))
        else:
            self._reached[count] = reached
        if count == self.expected:
            self.complete += 1
            self._check()

    def _check(self) -> None:
        if self.complete == len(self.trackers):
            self.done.set()


async def _subscription(
    ctx: WorkerContext,
    ws: WebSocketConnection,
    tracker: SeqTracker,
    completion: _Completion,
    tally: Tally,
) -> None:
    recorder = ctx.recorder
    while True:
        data = await ws.get_message()
        now = time.monotonic_ns()
        try:
            probe = decode_probe(data)
        except msgspec.DecodeError:
            tally.corrupt += 1
            continue
        if tracker.add(probe.seq):
            recorder.record(probe.sent_ns, now)
            ctx.count()
            tally.last_received_ns = max(tally.last_received_ns, now)
            completion.advanced(tracker)


async def subscriber(ctx: WorkerContext) -> dict[str, Any]:
    """``connections`` subscribers; every one must get every published message once."""
    p = ctx.params
    n = p["connections"]
    tally = Tally(connections=n)
    async with trio.open_nursery() as nursery:
        conns = await _open_bounded(nursery, ctx, n)
        with trio.fail_after(p["connect_timeout"]):
            for ws in conns:
                greeting = await ws.get_message()
                if greeting != SUBSCRIBED:
                    raise RuntimeError(f"expected the {SUBSCRIBED!r} greeting, got {greeting!r}")
        ctx.send("ready")
        await ctx.recv("go")
        trackers = [SeqTracker() for _ in conns]
        completion = _Completion(trackers, ctx.spec.links.get("watermark"))
        async with trio.open_nursery() as load:
            for ws, tracker in zip(conns, trackers, strict=True):
                load.start_soon(_subscription, ctx, ws, tracker, completion, tally)
            expected = (await ctx.recv("stop"))["expected"]
            completion.expect(expected)
            with trio.move_on_after(p["drain_timeout"]):
                await completion.done.wait()
            await trio.sleep(p["settle"])  # late duplicates would show up here
            load.cancel_scope.cancel()
        tally.sent = expected * n
        for tracker in trackers:
            tally.add_tracker(tracker, expected)
        ctx.send("finished", **tally.as_dict())
        await ctx.recv("close")
        await _close_bounded(conns)
        nursery.cancel_scope.cancel()
    return tally.as_dict()


async def storm(ctx: WorkerContext) -> dict[str, Any]:
    """Open ``connections`` connections at once at the go signal; hold them until close."""
    p = ctx.params
    n = p["connections"]
    url = _with_path(ctx.url, p["path"])
    conns: list[WebSocketConnection] = []
    errors: list[str] = []
    failed = 0
    first_ns = last_ns = 0
    async with trio.open_nursery() as nursery:
        ctx.send("ready")
        go = await ctx.recv("go")
        limiter = trio.CapacityLimiter(p["concurrency"] or n)

        async def one() -> None:
            nonlocal failed, last_ns
            async with limiter:
                began = time.monotonic_ns()
                try:
                    with trio.fail_after(p["connect_timeout"]):
                        ws = await connect_websocket_url(nursery, url)
                except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
                    failed += 1
                    if len(errors) < MAX_ERRORS_KEPT:
                        errors.append(repr(exc))
                    return
                done = time.monotonic_ns()
                ctx.recorder.record(began, done)
                ctx.count()
                last_ns = max(last_ns, done)
                conns.append(ws)

        await sleep_until_ns(go["start_ns"])
        first_ns = time.monotonic_ns()
        async with trio.open_nursery() as opening:
            for _ in range(n):
                opening.start_soon(one)
        result = {
            "connections": n,
            "established": len(conns),
            "failed": failed,
            "errors": errors,
            "first_attempt_ns": first_ns,
            "last_established_ns": last_ns,
        }
        ctx.send("finished", **result)
        await ctx.recv("close")
        await _close_bounded(conns)
        nursery.cancel_scope.cancel()
    return result
