"""Workloads of the catch-up scenarios (``catchup``, ``storm``), on the client SDK.

The receiving devices are ``client.RivetClient``s: the SDK's sync paging and its
de-duplication (``client.dedup``) are part of what is measured and checked. Every device
also keeps its own record of every message the SDK handed it as new, so that a message
handed over twice (a duplicate that got through) or never (lost) is counted independently
of the SDK; ``redeliveries`` is what the SDK dropped (live and again in a sync page).

* ``senders``: lean connections (``bench.rivet_client.Wire``), one per sender user. At each
  ``send`` every sender sends ``count`` messages into its single chat with each of its
  targets, ``window`` unacknowledged at most per connection, and reports when all are
  acknowledged (durable). With ``reconnect`` it first opens new connections (after a
  server restart).
* ``catchup_device``: one device. ``online``: connect, sync to the head, receive live;
  ``offline``: sync (so its token is current), disconnect; ``catchup``: connect and page
  through ``sync`` until current, timing each page.
* ``storm_clients``: many devices, each with its own single chat with one sender. They
  connect and sync, receive a batch live, lose their connection when the server restarts,
  and at ``go`` all reconnect at once and catch up with the SDK's ``catch_up``.
"""

from __future__ import annotations

import itertools
import random
import time
from array import array
from collections.abc import Sequence
from typing import Any

import trio

from bench.loadgen import WorkerContext, sleep_until_ns
from bench.rivet_client import Frame, Wire, padding, probe_text
from bench.rivet_workloads import CONNECT_CONCURRENCY, _close_all
from bench.workloads import MAX_ERRORS_KEPT
from client import ClientState, RivetClient, RivetError
from client.websocket import HandshakeError
from protocol import replies
from protocol import requests as rq
from protocol.events import MessageEvent
from protocol.ids import direct_conversation_id

PAGE = 500  # protocol.limits.MAX_PAGE
#: Seconds before a storm device's first retry; doubled each time, jittered, at most 4.
BACKOFF = 0.25


# --- senders --------------------------------------------------------------------------------


class _Sender:
    def __init__(self, index: int, user_id: int, token: str, targets: Sequence[int]) -> None:
        self.index = index
        self.user_id = user_id
        self.token = token
        self.targets = list(targets)
        self.wire: Wire | None = None
        self.pending: dict[int, int] = {}
        self.acked = 0
        self.errors = 0
        self.drained = trio.Event()
        self.window: trio.Semaphore

    def on_frame(self, frame: Frame, now: int) -> None:
        if frame.op in ("ok", "error") and frame.rid in self.pending:
            del self.pending[frame.rid]
            if frame.op == "ok":
                self.acked += 1
            else:
                self.errors += 1
            self.window.release()


async def _send_batch(sender: _Sender, count: int, first_n: int, window: int, pad: str) -> int:
    assert sender.wire is not None
    wire = sender.wire
    sender.window = trio.Semaphore(window)
    sent = 0
    for target in sender.targets:
        conv = direct_conversation_id(sender.user_id, target)
        for n in range(first_n, first_n + count):
            await sender.window.acquire()
            rid = wire.next_rid()
            sender.pending[rid] = n
            request = rq.MsgSend(
                rid=0,
                conv=conv,
                cmid=f"{target}.{n}",
                content=rq.Content(text=probe_text(time.monotonic_ns(), pad)),
            )
            await wire.send(request, rid)
            sent += 1
    for _ in range(window):
        await sender.window.acquire()  # every reply is in
    return sent


async def _count_batch(
    totals: dict[str, int], sender: _Sender, count: int, first_n: int, window: int, pad: str
) -> None:
    sent = await _send_batch(sender, count, first_n, window, pad)
    totals["sent"] += sent


async def senders(ctx: WorkerContext) -> dict[str, Any]:
    """``params["senders"]``: ``[user_id, token, [target user ids]]`` each."""
    p = ctx.params
    pad = padding(p["payload_size"])
    group = [_Sender(i, u, t, targets) for i, (u, t, targets) in enumerate(p["senders"])]
    totals = {"sent": 0, "acked": 0, "errors": 0}
    async with trio.open_nursery() as nursery:

        async def connect() -> None:
            with trio.fail_after(p["connect_timeout"]):
                async with trio.open_nursery() as opening:
                    for s in group:

                        async def one(s: _Sender = s) -> None:
                            s.wire = await Wire.open(nursery, ctx.url, s.token, s.on_frame)

                        opening.start_soon(one)

        await connect()
        ctx.send("ready")
        for _ in range(p["phases"]):
            order = await ctx.recv("send")
            if order.get("reconnect"):
                await connect()
            before = {k: totals[k] for k in totals}
            count, first_n = order["count"], order["first_n"]
            with trio.fail_after(p["drain_timeout"] + 60):
                async with trio.open_nursery() as sending:
                    for s in group:
                        sending.start_soon(
                            _count_batch, totals, s, count, first_n, p["window"], pad
                        )
            totals["acked"] = sum(s.acked for s in group)
            totals["errors"] = sum(s.errors for s in group)
            ctx.send("sent", **{k: totals[k] - before[k] for k in totals})
        await ctx.recv("close")
        await _close_all([s.wire for s in group if s.wire is not None])
        nursery.cancel_scope.cancel()
    return totals


# --- what a device got ----------------------------------------------------------------------


class _Got:
    """Every message the SDK handed over as new, by (conv, seq), and when."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        self.duplicated = 0
        self.live = 0
        self.live_latency = array("q")
        self._changed: trio.Event | None = None

    @property
    def changed(self) -> trio.Event:
        """Set at the next message taken. Made when first waited for: most messages (every
        one of a catch-up) have no waiter, and a ``trio.Event`` each was made for nothing."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def take(self, event: object, *, live: bool) -> None:
        if not isinstance(event, MessageEvent):
            return
        key = (event.conv, event.seq)
        if key in self.seen:
            self.duplicated += 1
            return
        now = time.monotonic_ns()
        self.seen[key] = now
        if live:
            self.live += 1
            if event.content is not None:
                self.live_latency.append(now - int(event.content.text.split(" ", 1)[0]))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def count(self) -> int:
        return len(self.seen)

    def check(self, expected: dict[str, int]) -> tuple[int, int]:
        """(lost, unexpected) against ``expected[conv]`` = messages 1..n in each conv."""
        lost = sum(
            1 for conv, n in expected.items() for s in range(1, n + 1) if (conv, s) not in self.seen
        )
        unexpected = sum(1 for conv, seq in self.seen if seq > expected.get(conv, 0))
        return lost, unexpected


async def _receive_live(client: RivetClient, got: _Got) -> None:
    """Hand every new live event to ``got`` until the connection ends."""
    try:
        while True:
            got.take(await client.next_event(), live=True)
    except (trio.EndOfChannel, trio.ClosedResourceError, RivetError):
        return


async def _pages(client: RivetClient, got: _Got, latency: array[int]) -> int:
    """``RivetClient.catch_up``, page by page (the same requests and de-duplication), with
    each page's round trip recorded. Returns the pages read."""
    state = client.state
    pages = 0
    while True:
        began = time.monotonic_ns()
        token = state.sync_token
        page: replies.SyncPage = await client.request(
            rq.Sync(rid=0, token=token, summary=token is None, limit=PAGE)
        )
        latency.append(time.monotonic_ns() - began)
        pages += 1
        if token is None:
            for item in page.summaries:
                state.dedup.start_at(item.conv, item.last_seq)
        for event in page.events:
            if state.dedup.accept(event):
                got.take(event, live=False)
        state.sync_token = page.token
        if not page.more:
            break
    await client.resend_unacked()
    if state.sync_token is not None:
        await client.request(rq.Ack(rid=0, token=state.sync_token))
    return pages


def _state(user: Sequence[Any]) -> ClientState:
    user_id, device_id, access, refresh = user
    return ClientState(
        access_token=access, refresh_token=refresh, user_id=user_id, device_id=device_id
    )


# --- one device catching up -----------------------------------------------------------------


async def catchup_device(ctx: WorkerContext) -> dict[str, Any]:
    """``params["device"]``: ``[user_id, device_id, access_token, refresh_token]``."""
    p = ctx.params
    state = _state(p["device"])
    got = _Got()
    page_latency = array("q")
    result: dict[str, Any] = {}
    ctx.send("ready")
    # Online: receive the live phase.
    order = await ctx.recv("online")
    async with trio.open_nursery() as nursery, RivetClient.connect(ctx.url, state) as client:
        await _pages(client, got, array("q"))
        nursery.start_soon(_receive_live, client, got)
        ctx.send("online")
        expected = order["expected"]
        with trio.move_on_after(p["drain_timeout"] + 60):
            while got.live < expected:
                await got.changed.wait()
        ctx.send("received", received=got.live, last_ns=max(got.seen.values(), default=0))
        await ctx.recv("offline")
        before = state.dedup.redeliveries
        await _pages(client, got, array("q"))  # the token moves past what came live
        result["offline_sync_redeliveries"] = state.dedup.redeliveries - before
        nursery.cancel_scope.cancel()
    ctx.send("offline")
    # Catch up across what was sent while offline.
    go = await ctx.recv("catchup")
    await sleep_until_ns(go["start_ns"])
    began = time.monotonic_ns()
    before_seen, before_redeliveries = got.count(), state.dedup.redeliveries
    async with RivetClient.connect(ctx.url, state) as client:
        pages = await _pages(client, got, page_latency)
    done = time.monotonic_ns()
    caught_up = got.count() - before_seen
    ctx.recorder.record(began, done)
    lost, unexpected = got.check(go["expected"])
    result.update(
        {
            "caught_up": caught_up,
            "pages": pages,
            "began_ns": began,
            "done_ns": done,
            "lost": lost,
            "duplicated": got.duplicated,
            "unexpected": unexpected,
            "redeliveries": state.dedup.redeliveries - before_redeliveries,
            "live_received": got.live,
            "page_latency_ns": page_latency,
            "live_latency_ns": got.live_latency,
        }
    )
    ctx.send("current", **{k: v for k, v in result.items() if not isinstance(v, array)})
    await ctx.recv("close")
    return result


# --- many devices reconnecting at once ------------------------------------------------------


class _Device:
    def __init__(self, user: Sequence[Any], conv: str) -> None:
        self.state = _state(user)
        self.conv = conv
        self.got = _Got()
        self.disconnected = trio.Event()
        self.error: str | None = None
        self.current = False


async def storm_clients(ctx: WorkerContext) -> dict[str, Any]:
    """``params["devices"]``: ``[user_id, device_id, access, refresh, sender_id]`` each."""
    p = ctx.params
    devices = [_Device(d[:4], direct_conversation_id(int(d[0]), int(d[4]))) for d in p["devices"]]
    errors: list[str] = []
    failed = retries = 0

    async def first_life(device: _Device, limiter: trio.CapacityLimiter, up: trio.Event) -> None:
        """Connect, sync to the head, receive live until the server goes away."""
        await limiter.acquire_on_behalf_of(device)
        held = True
        try:
            async with RivetClient.connect(ctx.url, device.state) as client:
                await _pages(client, device.got, array("q"))
                limiter.release_on_behalf_of(device)
                held = False
                up.set()
                await _receive_live(client, device.got)
        except (RivetError, OSError, trio.BrokenResourceError) as exc:
            device.error = repr(exc)
        finally:
            if held:
                limiter.release_on_behalf_of(device)
            device.disconnected.set()

    async with trio.open_nursery() as nursery:
        limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
        ups = [trio.Event() for _ in devices]
        for device, up in zip(devices, ups, strict=True):
            nursery.start_soon(first_life, device, limiter, up)
        with trio.fail_after(p["connect_timeout"]):
            for up in ups:
                await up.wait()
        ctx.send("ready")
        order = await ctx.recv("expect")
        with trio.move_on_after(p["drain_timeout"] + 60):
            for device in devices:
                while device.got.live < order["count"]:
                    await device.got.changed.wait()
        ctx.send("received", received=sum(d.got.live for d in devices))
        # The server restarts: every connection goes away.
        with trio.fail_after(p["connect_timeout"]):
            for device in devices:
                await device.disconnected.wait()
        ctx.send("disconnected")
        go = await ctx.recv("go")
        expected: int = go["expected"]
        last_ns = 0

        async def second_life(device: _Device) -> None:
            """Reconnect and catch up; after a refusal or a lost connection, again after a
            jittered, doubling back-off (as an app would), until current or out of time."""
            nonlocal failed, retries, last_ns
            began = time.monotonic_ns()
            done = 0
            with trio.move_on_after(p["connect_timeout"]):
                for attempt in itertools.count():
                    try:
                        async with RivetClient.connect(ctx.url, device.state) as client:
                            for event in await client.catch_up():
                                device.got.take(event, live=False)
                            done = time.monotonic_ns()
                            await client.conn.aclose()
                        break
                    except (
                        OSError,
                        RivetError,
                        HandshakeError,
                        trio.BrokenResourceError,
                    ) as exc:
                        retries += 1
                        if len(errors) < MAX_ERRORS_KEPT:
                            errors.append(repr(exc))
                        await trio.sleep(random.uniform(0.5, 1.0) * min(BACKOFF * 2**attempt, 4.0))
            if not done:
                failed += 1
                return
            device.current = True
            ctx.recorder.record(began, done)
            ctx.count()
            last_ns = max(last_ns, done)

        redelivered_before = sum(d.state.dedup.redeliveries for d in devices)
        await sleep_until_ns(go["start_ns"])
        async with trio.open_nursery() as storm:
            for device in devices:
                storm.start_soon(second_life, device)
        lost = unexpected = duplicated = 0
        for device in devices:
            if not device.current:
                continue  # counted as failed
            lo, un = device.got.check({device.conv: expected})
            lost += lo
            unexpected += un
            duplicated += device.got.duplicated
        result = {
            "devices": len(devices),
            "current": len(devices) - failed,
            "failed": failed,
            "retries": retries,
            "errors": errors,
            "last_current_ns": last_ns,
            "lost": lost,
            "duplicated": duplicated,
            "unexpected": unexpected,
            "redeliveries": sum(d.state.dedup.redeliveries for d in devices) - redelivered_before,
            "live_received": sum(d.got.live for d in devices),
        }
        ctx.send("current", **result)
        await ctx.recv("close")
        nursery.cancel_scope.cancel()
    return result
