"""The router without a network: one built from a ``Config`` on already opened stores, and
connections that are never written to a socket (tests read their send queues)."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from protocol import codec
from protocol import requests as rq
from protocol.errors import ErrorCode
from server.app import build_context
from server.clock import Clock, ManualClock
from server.config import Config
from server.connection import Connection
from server.credentials import Credentials
from server.notify.interface import Notifier
from server.notify.memory import MemoryNotifier
from server.router import Router
from storage.stores import Stores


class _NoSocket:
    """Connections here are never written to a socket: tests read the send queue."""


def build_router(
    config: Config, stores: Stores, *, clock: Clock | None = None, notifier: Notifier | None = None
) -> Router:
    """A router and its context; a ``ManualClock`` and a ``MemoryNotifier`` unless given."""
    clock = clock or ManualClock()
    ctx = build_context(
        config,
        stores,
        clock=clock,
        notifier=notifier or MemoryNotifier(),
        credentials=Credentials.open(config, clock),
    )
    return Router(ctx)


def connect(queue_frames: int = 64) -> Connection:
    return Connection(ws=_NoSocket(), queue_frames=queue_frames)  # type: ignore[arg-type]


def frames(conn: Connection) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(msgspec.msgpack.decode(conn._receive.receive_nowait()))
        except trio.WouldBlock:
            return out


async def call(router: Router, conn: Connection, request: rq.Request) -> dict[str, Any]:
    await router.handle_frame(conn, codec.encode_request(request))
    replies = [f for f in frames(conn) if f["op"] in ("ok", "error")]
    assert len(replies) == 1, replies
    return replies[0]


def split(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The frames queued on ``conn``: its replies (``ok``, ``error``) and its events."""
    replies, events = [], []
    for frame in frames(conn):
        (replies if frame["op"] in ("ok", "error") else events).append(frame)
    return replies, events


async def call_checked(
    router: Router, conn: Connection, request: rq.Request, *, rid: int, deadline: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``request`` with ``rid`` through the router within ``deadline`` seconds: its one
    reply, checked to be for this ``rid`` and never an internal error (4003), and the
    events queued with it (the property tests' call)."""
    request = msgspec.structs.replace(request, rid=rid)
    with trio.fail_after(deadline):
        await router.handle_frame(conn, codec.encode_request(request))
    replies, events = split(conn)
    assert len(replies) == 1, replies
    reply = replies[0]
    assert reply.get("rid") == rid, reply
    assert reply.get("code") != ErrorCode.INTERNAL, (request, reply)
    return reply, events


async def login(router: Router, conn: Connection, phone: str) -> int:
    assert (await call(router, conn, rq.Hello(rid=1, version=1)))["op"] == "ok"
    await call(router, conn, rq.LoginRequestCode(rid=2, phone=phone))
    code = router.ctx.notifier.last_code(phone)  # type: ignore[attr-defined]
    reply = await call(router, conn, rq.LoginVerify(rid=3, phone=phone, code=code))
    assert reply["op"] == "ok", reply
    return int(reply["result"]["session"]["user_id"])
