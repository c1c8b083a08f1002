"""C1 without a network: operators' acts change the stores, are logged, and the watcher
applies them to live connections (what another process's ``rivet moderate`` does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import requests as rq
from protocol.errors import CloseCode
from protocol.ids import direct_conversation_id
from server.config import Config
from server.connection import Connection
from server.moderation import (
    ModerationError,
    ModerationWatcher,
    act_on_message,
    dismiss,
    set_suspension,
)
from server.router import Router
from storage.memory import open_memory_stores
from tests.server.routers import build_router, call, connect, frames, login


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(store="memory", data_dir=tmp_path)
    async with open_memory_stores() as stores:
        yield build_router(config, stores)


async def test_c1_hide_reaches_members_live_and_keeps_evidence(router: Router) -> None:
    ctx = router.ctx
    alice_conn, bob_conn = connect(), connect()
    alice = await login(router, alice_conn, "+15550000101")
    bob = await login(router, bob_conn, "+15550000102")
    for conn in (alice_conn, bob_conn):
        ctx.hub.attach(conn)
    watcher = ModerationWatcher(ctx)
    assert await watcher.poll() == 0
    conv = direct_conversation_id(alice, bob)
    sent = await call(
        router,
        alice_conn,
        rq.MsgSend(rid=1, conv=conv, cmid="x", content=rq.Content(text="buy now")),
    )
    seq = sent["result"]["seq"]
    frames(bob_conn)  # the message itself
    act = await act_on_message(
        ctx.stores, action="hide", conv_id=conv, seq=seq, operator="o", reason="spam", now=5
    )
    assert act.evidence is not None and act.target_user == alice
    assert await watcher.poll() == 1
    (recall,) = [f for f in frames(bob_conn) if f["op"] == "ev.recall"]
    assert (recall["conv"], recall["seq"], recall["by"]) == (conv, seq, 0)
    entry = await ctx.stores.cross.get_entry(conv, seq)
    assert entry is not None and entry.recalled and entry.body is None
    # Acting again changes nothing but is logged; members get the same recall event again
    # (the same stream position, which devices drop as seen).
    again = await act_on_message(
        ctx.stores, action="remove", conv_id=conv, seq=seq, operator="o", reason="x", now=6
    )
    assert again.evidence is None and await watcher.poll() == 1
    recalls = [f for f in frames(bob_conn) if f["op"] == "ev.recall"]
    assert [r["stream"] for r in recalls] == [recall["stream"]]


async def test_c1_suspension_closes_live_connections_4005(router: Router) -> None:
    ctx = router.ctx
    conn = connect()
    user = await login(router, conn, "+15550000103")
    ctx.hub.attach(conn)
    watcher = ModerationWatcher(ctx)
    await set_suspension(ctx.stores, user_id=user, suspended=True, operator="o", reason="r", now=1)
    assert conn.close_request is None  # not before the watcher sees the act
    assert await watcher.poll() == 1
    assert conn.close_request is not None
    assert conn.close_request.code == CloseCode.ACCOUNT_SUSPENDED
    found = await ctx.stores.personal.get_user(user)
    assert found is not None and found.suspended


async def test_c1_acts_on_nothing_are_refused_and_not_logged(router: Router) -> None:
    stores = router.ctx.stores
    with pytest.raises(ModerationError):
        await act_on_message(
            stores, action="hide", conv_id="g:9", seq=1, operator="o", reason="r", now=1
        )
    with pytest.raises(ModerationError):
        await set_suspension(stores, user_id=404, suspended=True, operator="o", reason="r", now=1)
    with pytest.raises(ModerationError):
        await dismiss(stores, report_ids=[404], operator="o", reason="r", now=1)
    with pytest.raises(ModerationError):
        await dismiss(stores, report_ids=[], operator="o", reason="r", now=1)
    assert await stores.moderation.last_act_id() == 0


async def _hidden_history_group(router: Router) -> tuple[dict[str, Connection], str, int]:
    """Alice's group that hides its history: Alice and Bob, a message of Alice's, then Carol
    added after it. Every connection attached to the hub, frames so far drained."""
    ctx = router.ctx
    conns = {name: connect() for name in ("alice", "bob", "carol")}
    users = {}
    for n, (name, conn) in enumerate(conns.items()):
        users[name] = await login(router, conn, f"+1555000020{n}")
        ctx.hub.attach(conn)
    created = await call(
        router,
        conns["alice"],
        rq.GroupCreate(rid=1, cmid="g", title="g", members=[users["bob"]], history_visible=False),
    )
    conv = created["result"]["conv"]["conv"]
    sent = await call(
        router,
        conns["alice"],
        rq.MsgSend(rid=2, conv=conv, cmid="m", content=rq.Content(text="before carol")),
    )
    await call(router, conns["alice"], rq.GroupAdd(rid=3, conv=conv, users=[users["carol"]]))
    for conn in conns.values():
        frames(conn)
    return conns, conv, sent["result"]["seq"]


def _recalls(conn: Connection) -> list[tuple[str, int]]:
    return [(f["conv"], f["seq"]) for f in frames(conn) if f["op"] == "ev.recall"]


async def test_c1_a_moderators_recall_reaches_only_members_who_saw_the_message(
    router: Router,
) -> None:
    """Carol joined a group that hides its history after the message: ``sync`` never shows
    her its recall, so neither does a live event (M4, as for a member's own recall)."""
    conns, conv, seq = await _hidden_history_group(router)
    watcher = ModerationWatcher(router.ctx)
    await watcher.poll()
    await act_on_message(
        router.ctx.stores, action="remove", conv_id=conv, seq=seq, operator="o", reason="r", now=5
    )
    assert await watcher.poll() == 1
    assert _recalls(conns["bob"]) == [(conv, seq)]
    assert _recalls(conns["carol"]) == []


async def test_a1_an_erased_accounts_recalls_reach_only_members_who_saw_them(
    router: Router,
) -> None:
    """Erasing Alice's account recalls her messages; Carol, who joined after this one in a
    group that hides its history, is not told of it."""
    conns, conv, seq = await _hidden_history_group(router)
    user = conns["alice"].user_id
    assert user is not None
    await router.ctx.eraser.begin(user, reason="test")
    await router.ctx.eraser.finish_all()
    assert _recalls(conns["bob"]) == [(conv, seq)]
    assert _recalls(conns["carol"]) == []
