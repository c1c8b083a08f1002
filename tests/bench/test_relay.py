"""``bench.baseline.relay``, the floor of the ``direct`` case: it must do the work it stands
for (validate, ack, relay to both users, store first when durable) and refuse the rest with
Rivet's error codes, or the floor it shows would be too low."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import trio

from bench.baseline.relay import Relay, open_store
from bench.rivet_client import Frame, RequestFailed, Wire
from protocol import replies
from protocol import requests as rq
from protocol.ids import direct_conversation_id
from server.transport.listener import serve
from storage.sqlite.writer import SqliteWriter

TOKENS = {"token-alice": 1, "token-bob": 2, "token-carol": 3}
CONV = direct_conversation_id(1, 2)


async def _serve_relay(nursery: trio.Nursery, writer: SqliteWriter | None) -> str:
    relay = Relay(TOKENS, writer)
    port = await nursery.start(
        lambda task_status: serve(
            relay.handle,
            host="127.0.0.1",
            port=0,
            tls=None,
            handler_nursery=nursery,
            task_status=task_status,
        )
    )
    return f"ws://127.0.0.1:{port}"


def _send(cmid: str, conv: str = CONV) -> rq.MsgSend:
    return rq.MsgSend(rid=0, conv=conv, cmid=cmid, content=rq.Content(text=f"hi {cmid}"))


@pytest.mark.parametrize("durable", [False, True])
async def test_a_send_is_acked_and_relayed_to_both_users(tmp_path: Path, durable: bool) -> None:
    frames: dict[str, list[Frame]] = {"alice": [], "bob": []}
    # Alice: two acks and three events; Bob: one ack and three events.
    expected = {"alice": 5, "bob": 4}
    all_in = trio.Event()
    acked_stored: list[int] = []

    def collect(side: str) -> Callable[[Frame, int], None]:
        def on_frame(frame: Frame, _: int) -> None:
            if durable and frame.op == "ok":
                # Durable before acknowledged: the row is committed when its ack arrives.
                seq = msgspec.msgpack.decode(frame.result, type=replies.Sent).seq
                committed = sqlite3.connect(tmp_path / "relay.db").execute(
                    "SELECT count(*) FROM messages WHERE seq = ?", (seq,)
                )
                acked_stored.append(committed.fetchone()[0])
            frames[side].append(frame)
            if all(len(frames[s]) >= n for s, n in expected.items()):
                all_in.set()

        return on_frame

    with trio.fail_after(10):
        async with open_store(tmp_path) as writer, trio.open_nursery() as nursery:
            url = await _serve_relay(nursery, writer if durable else None)
            alice = await Wire.open(nursery, url, "token-alice", collect("alice"))
            bob = await Wire.open(nursery, url, "token-bob", collect("bob"))
            for n in (1, 2):
                await alice.send(_send(f"a.{n}"), alice.next_rid())
            await bob.send(_send("b.1"), bob.next_rid())
            await all_in.wait()
            await alice.ws.aclose()
            await bob.ws.aclose()
            nursery.cancel_scope.cancel()
    acks = [f for f in frames["alice"] if f.op == "ok"]
    assert [f.rid for f in acks] == [2, 3]  # rid 1 was hello's
    # One event per message on every connection of both users: seqs 1..3 in the order the
    # relay took the sends (Bob's may come between Alice's two), each sender's in its order.
    events = {
        side: [(f.seq, f.sender, f.cmid) for f in frames[side] if f.op == "ev.message"]
        for side in ("alice", "bob")
    }
    taken = sorted(events["alice"])
    assert sorted(events["bob"]) == taken
    assert [seq for seq, _, _ in taken] == [1, 2, 3]
    assert [cmid for _, sender, cmid in taken if sender == 1] == ["a.1", "a.2"]
    assert [cmid for _, sender, cmid in taken if sender == 2] == ["b.1"]
    stored = sqlite3.connect(tmp_path / "relay.db").execute(
        "SELECT seq, sender, cmid, conv FROM messages ORDER BY seq"
    )
    rows = [(*event, CONV) for event in taken]
    assert stored.fetchall() == (rows if durable else [])
    assert acked_stored == ([1, 1, 1] if durable else [])


async def test_refusals_carry_rivets_codes(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await _serve_relay(nursery, None)
            with pytest.raises(RequestFailed, match="auth_failed"):
                await Wire.open(nursery, url, "token-nobody")
            carol = await Wire.open(nursery, url, "token-carol")
            with pytest.raises(RequestFailed, match="forbidden"):
                await carol.call(_send("c.1"))  # a chat between Alice and Bob
            with pytest.raises(RequestFailed, match="unknown_op"):
                await carol.call(rq.Auth(rid=0, token="token-carol"))
            await carol.ws.aclose()
            nursery.cancel_scope.cancel()
