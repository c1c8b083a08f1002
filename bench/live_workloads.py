"""The live join-storm workloads (L1), speaking Rivet's protocol (see ``bench.loadgen``).

* ``host``: one connection with the host's token. Creates a group of every viewer (in
  chunks of ``MAX_USERS_PER_REQUEST``), says ``ready``; at ``start`` goes live and reports
  the live id; then counts the ``ev.live.counts`` events it is sent until ``close``.
* ``viewer``: opens its share of connections, each authenticated with one viewer's token,
  says ``ready``; at the ``go`` time every connection sends ``live.join`` at once and the
  round trip of each is recorded; then it counts each connection's ``ev.live.counts``
  events until ``close``.

The figures that matter are how long the storm takes, the join round trips, and that each
participant got at most about one count event per interval (the server coalesces), with the
right final count.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from bench.loadgen import WorkerContext, sleep_until_ns
from protocol import codec, limits, replies
from protocol import live as pl
from protocol import requests as rq
from protocol.catalog import RESULT_TYPES
from protocol.version import PROTOCOL_VERSION

CLIENT_QUEUE = 256
CONNECT_CONCURRENCY = 64
MAX_ERRORS_KEPT = 5


class RequestFailed(RuntimeError):
    """The server answered a request with an ``error`` reply."""


class _Conn:
    """One Rivet connection of a worker: requests in order, and what counts it was sent."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._rids = itertools.count(1)
        self.counts = 0
        self.last_viewers: int | None = None

    async def request(self, request: rq.Request) -> Any:
        rid = next(self._rids)
        await self.ws.send_message(codec.encode_request(msgspec.structs.replace(request, rid=rid)))
        while True:
            frame = await self._next()
            if isinstance(frame, codec.OkFrame) and frame.rid == rid:
                return codec.decode_result(frame.result, RESULT_TYPES[type(request)])
            if isinstance(frame, replies.Error) and frame.rid == rid:
                raise RequestFailed(f"{type(request).__name__}: {frame.name}: {frame.message}")
            self._note(frame)

    async def count_events(self) -> None:
        """Read until the connection closes, counting ``ev.live.counts``."""
        try:
            while True:
                self._note(await self._next())
        except ConnectionClosed:
            return

    async def _next(self) -> Any:
        data = await self.ws.get_message()
        if isinstance(data, str):
            raise RequestFailed("a text frame from the server")
        return codec.decode_server_frame(data)

    def _note(self, frame: object) -> None:
        if isinstance(frame, pl.LiveCountsEvent):
            self.counts += 1
            self.last_viewers = frame.viewers


async def _open(nursery: trio.Nursery, url: str, token: str) -> _Conn:
    ws = await connect_websocket_url(nursery, url, message_queue_size=CLIENT_QUEUE)
    conn = _Conn(ws)
    await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION, token=token))
    return conn


async def host(ctx: WorkerContext) -> dict[str, Any]:
    p = ctx.params
    async with trio.open_nursery() as nursery:
        with trio.fail_after(p["connect_timeout"]):
            conn = await _open(nursery, ctx.url, p["token"])
            viewers: list[int] = list(p["viewers"])
            chunk = limits.MAX_USERS_PER_REQUEST
            created: replies.GroupCreated = await conn.request(
                rq.GroupCreate(
                    rid=0, cmid="live-bench", title="live bench", members=viewers[:chunk]
                )
            )
            conv = created.conv.conv
            for first in range(chunk, len(viewers), chunk):
                await conn.request(
                    rq.GroupAdd(rid=0, conv=conv, users=viewers[first : first + chunk])
                )
        ctx.send("ready")
        await ctx.recv("start")
        started: pl.LiveJoined = await conn.request(
            pl.LiveStart(rid=0, conv=conv, title="join storm")
        )
        ctx.send("live", live_id=started.live.live_id)
        nursery.start_soon(conn.count_events)
        await ctx.recv("close")
        nursery.cancel_scope.cancel()
    return {"counts": conn.counts, "last_viewers": conn.last_viewers}


async def viewer(ctx: WorkerContext) -> dict[str, Any]:
    p = ctx.params
    conns: list[_Conn] = []
    errors: list[str] = []
    failed = 0
    last_ns = 0
    async with trio.open_nursery() as nursery:
        limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

        async def open_one(token: str) -> None:
            async with limiter:
                conns.append(await _open(nursery, ctx.url, token))

        with trio.fail_after(p["connect_timeout"]):
            async with trio.open_nursery() as opening:
                for token in p["tokens"]:
                    opening.start_soon(open_one, token)
        ctx.send("ready")
        go = await ctx.recv("go")
        live_id: str = go["live_id"]

        async def join_one(conn: _Conn) -> None:
            nonlocal failed, last_ns
            began = time.monotonic_ns()
            try:
                await conn.request(pl.LiveJoin(rid=0, live_id=live_id))
            except (RequestFailed, ConnectionClosed) as exc:
                failed += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(repr(exc))
                return
            done = time.monotonic_ns()
            ctx.recorder.record(began, done)
            ctx.count()
            last_ns = max(last_ns, done)
            nursery.start_soon(conn.count_events)

        await sleep_until_ns(go["start_ns"])
        with trio.fail_after(p["connect_timeout"]):
            async with trio.open_nursery() as joining:
                for conn in conns:
                    joining.start_soon(join_one, conn)
        ctx.send("joined", joined=len(conns) - failed, failed=failed, last_joined_ns=last_ns)
        await ctx.recv("close")
        nursery.cancel_scope.cancel()
    seen = [c.last_viewers for c in conns if c.last_viewers is not None]
    return {
        "connections": len(conns),
        "failed": failed,
        "errors": errors,
        "counts_total": sum(c.counts for c in conns),
        "counts_max": max((c.counts for c in conns), default=0),
        "last_viewers_min": min(seen, default=None),
        "without_counts": len(conns) - len(seen),
    }
