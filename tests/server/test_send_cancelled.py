"""M1: a message that was stored is published, even when its request is cancelled meanwhile.

The router's task for a request can be cancelled (the connection is torn down as a slow
consumer, the server stops). ``messages.send`` takes no shielded scope on its common path:
it relies on the store's promise that a cancelled ``append`` either stored nothing or
returns its result (``CrossDomainStore.append``), and on reaching the publication without a
checkpoint, or under a shield when the members must be read. Here the cancellation lands
while the commit is in flight: the peer must still get the message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol import codec
from protocol import requests as rq
from server.config import Config
from server.connection import Connection
from server.context import Context
from server.router import Router
from storage.interfaces import CrossDomainStore
from storage.memory import open_memory_stores
from storage.records import Appended, NewEntry
from storage.sqlite import open_sqlite_stores
from tests.server.routers import build_router, connect, frames
from tests.server.routers import login as sign_in


class _CancelledDuringCommit:
    """The store, with the request's scope cancelled while its commit is in flight: the
    commit is reported and the cancellation lands at the caller's next checkpoint, as the
    store interface promises."""

    def __init__(self, inner: CrossDomainStore) -> None:
        self._inner = inner
        self.scope: trio.CancelScope | None = None

    async def recall(self, **kwargs: Any) -> Any:
        recalled = await self._inner.recall(**kwargs)
        if self.scope is not None:
            self.scope.cancel()
        return recalled

    async def append(self, entry: NewEntry) -> Appended:
        appended = await self._inner.append(entry)
        if self.scope is not None and entry.kind == "message":
            self.scope.cancel()
        return appended

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(params=["memory", "sqlite"])
async def router(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(store=request.param, data_dir=tmp_path)
    opened = (
        open_memory_stores() if request.param == "memory" else open_sqlite_stores(tmp_path / "data")
    )
    async with opened as stores:
        yield build_router(config, stores)


async def login(router: Router, phone: str) -> Connection:
    """A logged-in connection, online in the hub, its queue emptied."""
    conn = connect()
    await sign_in(router, conn, phone)
    router.ctx.hub.attach(conn)
    frames(conn)
    return conn


async def send_cancelled(
    router: Router, conn: Connection, conv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Send one message with the request cancelled during its commit."""
    store = _CancelledDuringCommit(router.ctx.conversations(conv))
    monkeypatch.setattr(Context, "conversations", lambda self, conv_id: store)
    send = rq.MsgSend(rid=9, conv=conv, cmid="c-cancelled", content=rq.Content(text="still"))
    with trio.CancelScope() as scope:
        store.scope = scope
        await router.handle_frame(conn, codec.encode_request(send))
    # Cancelled after the commit: whatever checkpoints before the publication would raise.
    assert scope.cancel_called


async def group_of(router: Router, owner: Connection, member: Connection) -> str:
    """A group of the two, made by ``owner``; its id. The member's queue is emptied."""
    assert member.user_id is not None
    create = rq.GroupCreate(rid=5, cmid="g", title="team", members=[member.user_id])
    await router.handle_frame(owner, codec.encode_request(create))
    (reply,) = [f for f in frames(owner) if f["op"] == "ok"]
    frames(member)
    conv: str = reply["result"]["conv"]["conv"]
    return conv


def events(conn: Connection) -> list[str]:
    return [frame["content"]["text"] for frame in frames(conn) if frame["op"] == "ev.message"]


async def test_m1_a_single_chat_message_stored_during_a_cancel_reaches_the_peer(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await login(router, "+15550000101")
    bob = await login(router, "+15550000102")
    assert alice.user_id is not None and bob.user_id is not None
    low, high = sorted((alice.user_id, bob.user_id))
    await send_cancelled(router, alice, f"d:{low}:{high}", monkeypatch)
    assert events(bob) == ["still"]


async def test_m1_a_group_message_stored_during_a_cancel_reaches_members_on_a_cache_miss(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await login(router, "+15550000103")
    bob = await login(router, "+15550000104")
    conv = await group_of(router, alice, bob)
    router.ctx.members.invalidate(conv)  # the member list must be read after the commit
    await send_cancelled(router, alice, conv, monkeypatch)
    assert events(bob) == ["still"]


async def test_m4_a_group_recall_stored_during_a_cancel_reaches_members(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recall's audience is read from the store after the commit (who can see the
    message, ``MemberCache.seeing``): a cancellation landing there must not keep the stored
    recall from the members online."""
    alice = await login(router, "+15550000105")
    bob = await login(router, "+15550000106")
    conv = await group_of(router, alice, bob)
    send = rq.MsgSend(rid=6, conv=conv, cmid="m-1", content=rq.Content(text="oops"))
    await router.handle_frame(alice, codec.encode_request(send))
    (sent,) = [f for f in frames(alice) if f["op"] == "ok"]
    frames(bob)
    store = _CancelledDuringCommit(router.ctx.conversations(conv))
    monkeypatch.setattr(Context, "conversations", lambda self, conv_id: store)
    recall = rq.MsgRecall(rid=7, conv=conv, seq=sent["result"]["seq"])
    with trio.CancelScope() as scope:
        store.scope = scope
        await router.handle_frame(alice, codec.encode_request(recall))
    assert scope.cancel_called
    assert [(f["conv"], f["seq"]) for f in frames(bob) if f["op"] == "ev.recall"] == [
        (conv, sent["result"]["seq"])
    ]
