"""L1: a device that joins a stream again on a new connection before its old one is seen
gone (a phone changing networks reconnects well within the heartbeat's 30 s) keeps its
place: the new connection takes it, on stage included, and signals to the device reach it
there. The old connection's later close changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocol import live as pl
from protocol import requests as rq
from server.config import Config
from server.connection import Connection
from server.router import Router
from storage.memory import open_memory_stores
from tests.server.routers import build_router, call, connect, frames


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(store="memory", data_dir=tmp_path)
    async with open_memory_stores() as stores:
        yield build_router(config, stores)


async def _login(router: Router, phone: str) -> tuple[Connection, int, str]:
    """A connection logged in with a code: the connection, the user id and its token."""
    conn = connect(4096)
    assert (await call(router, conn, rq.Hello(rid=1, version=1)))["op"] == "ok"
    await call(router, conn, rq.LoginRequestCode(rid=2, phone=phone))
    code = router.ctx.notifier.last_code(phone)  # type: ignore[attr-defined]
    reply = await call(router, conn, rq.LoginVerify(rid=3, phone=phone, code=code))
    assert reply["op"] == "ok", reply
    router.ctx.hub.attach(conn)
    return conn, reply["result"]["session"]["user_id"], reply["result"]["access_token"]


async def _again(router: Router, token: str) -> Connection:
    """Another connection of the same device (its token)."""
    conn = connect(4096)
    reply = await call(router, conn, rq.Hello(rid=1, version=1, token=token))
    assert reply["op"] == "ok", reply
    router.ctx.hub.attach(conn)
    return conn


async def _ok(router: Router, conn: Connection, request: rq.Request) -> dict[str, Any]:
    reply = await call(router, conn, request)
    assert reply["op"] == "ok", reply
    result: dict[str, Any] = reply["result"]
    return result


def _signals(conn: Connection) -> list[str]:
    return [f["payload"] for f in frames(conn) if f["op"] == "ev.live.signal"]


async def test_l1_a_cohost_rejoining_on_a_new_connection_keeps_the_stage(router: Router) -> None:
    alice, _, _ = await _login(router, "+15550400001")
    bob_old, bob, bob_token = await _login(router, "+15550400002")
    carol, _, _ = await _login(router, "+15550400003")
    carol_id = carol.user_id
    assert carol_id is not None
    group = await _ok(
        router,
        alice,
        rq.GroupCreate(rid=4, cmid="g", title="g", members=[bob, carol_id]),
    )
    conv = group["conv"]["conv"]
    started = await _ok(router, alice, pl.LiveStart(rid=5, conv=conv, title="live"))
    live_id = started["live"]["live_id"]
    await _ok(router, bob_old, pl.LiveJoin(rid=6, live_id=live_id))
    await _ok(router, carol, pl.LiveJoin(rid=7, live_id=live_id))
    await _ok(router, bob_old, pl.LiveRaiseHand(rid=8, live_id=live_id))
    await _ok(router, alice, pl.LiveAnswerHand(rid=9, live_id=live_id, user=bob, accept=True))
    device = bob_old.device_id
    assert device is not None
    for conn in (alice, bob_old, carol):
        frames(conn)

    # Bob's device reconnects; the old connection is not seen gone yet.
    bob_new = await _again(router, bob_token)
    assert bob_new.device_id == device
    joined = await _ok(router, bob_new, pl.LiveJoin(rid=10, live_id=live_id))
    assert joined["role"] == "cohost" and joined["viewers"] == 2
    assert {(m["user"], m["device"], m["role"]) for m in joined["stage"]} == {
        (alice.user_id, alice.device_id, "host"),
        (bob, device, "cohost"),
    }
    # Nothing changed for the others: no count, no stage event.
    assert frames(alice) == [] and frames(carol) == []

    # A viewer's offer to Bob's device reaches the new connection, not the old one.
    signal = pl.LiveSignal(rid=11, live_id=live_id, to_device=device, kind="offer", payload="sdp")
    await _ok(router, carol, signal)
    assert _signals(bob_new) == ["sdp"] and _signals(bob_old) == []

    # The old connection's close, when it comes, takes nothing with it.
    router.ctx.hub.detach(bob_old)
    assert frames(alice) == [] and frames(carol) == []
    await _ok(router, carol, signal)
    assert _signals(bob_new) == ["sdp"]

    # Leaving from the new connection takes the device off the stage, with its events.
    await _ok(router, bob_new, pl.LiveLeave(rid=12, live_id=live_id))
    cohost_events = [f for f in frames(carol) if f["op"] == "ev.live.cohost"]
    assert [(e["user"], e["device"], e["cohost"]) for e in cohost_events] == [(bob, device, False)]
    stream = router.ctx.live.registry.get(live_id)
    assert stream is not None and stream.viewer_count == 1 and not stream.cohosts
