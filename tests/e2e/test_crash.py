"""Durability: an acknowledged message survives SIGKILL of the server (A3).

The server runs as a real ``rivet serve`` subprocess on SQLite. A client streams messages
into a single chat and a group; the server is killed with SIGKILL mid-stream and restarted
on the same data directory; the client resends what was never acknowledged (same cmids).
Then every acknowledged message must be stored, exactly once, with gap-free seqs.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio

from client import ClientState, RivetClient, RivetError
from protocol import replies
from protocol import requests as rq
from protocol.ids import direct_conversation_id
from tests.e2e.processes import create_users, rivet_server


async def _history(client: RivetClient, conv: str) -> dict[int, str | None]:
    """Every seq of ``conv`` -> the message text (None for system entries)."""
    seen: dict[int, str | None] = {}
    before: int | None = None
    while True:
        page: replies.History = await client.request(
            rq.MsgHistory(rid=0, conv=conv, before_seq=before, limit=500)
        )
        for m in page.messages:
            assert m.seq not in seen, f"seq {m.seq} returned twice"
            seen[m.seq] = m.content.text if m.content else None
        if not page.more or not page.messages:
            return seen
        before = page.messages[0].seq


async def _stream(
    url: str, state: ClientState, convs: list[str], acked: dict[str, replies.Sent], start: int
) -> None:
    """Send until the connection dies; record each ack by cmid."""
    try:
        async with RivetClient.connect(url, state) as client:
            for i in range(start, start + 100_000):
                cmid = f"m{i}"
                ack = await client.send(convs[i % len(convs)], f"text {i}", cmid=cmid)
                acked[cmid] = ack
    except (RivetError, OSError, trio.BrokenResourceError):
        return
    except BaseExceptionGroup as group:  # the SDK's nursery reports the lost connection
        if not group.subgroup((RivetError, OSError, trio.BrokenResourceError)):
            raise


async def test_a3_sigkill_mid_stream_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    alice, bob = create_users(data, 2)
    assert alice.user_id and bob.user_id
    direct = direct_conversation_id(alice.user_id, bob.user_id)
    acked: dict[str, replies.Sent] = {}
    rng = random.Random(7)
    next_index = 0
    async with rivet_server(data) as (_, url):
        async with RivetClient.connect(url, bob) as b:
            created = await b.request(
                rq.GroupCreate(rid=0, cmid="g1", title="crash", members=[alice.user_id])
            )
        convs = [direct, created.conv.conv]

    for round_ in range(3):
        async with rivet_server(data) as (process, url), trio.open_nursery() as nursery:
            nursery.start_soon(_stream, url, alice, convs, acked, next_index)
            target = len(acked) + rng.randint(50, 150)
            for _ in range(600):
                if len(acked) >= target:
                    break
                await trio.sleep(0.01)
            process.kill()  # SIGKILL, mid-stream
        assert process.returncode is not None
        next_index += 100_000
        assert len(acked) > 0, f"round {round_}: nothing was acknowledged"

    async with rivet_server(data) as (_, url):
        async with RivetClient.connect(url, alice) as a:
            in_flight = dict(alice.unacked)
            for ack, cmid in zip(await a.resend_unacked(), in_flight, strict=True):
                acked[cmid] = ack
        async with RivetClient.connect(url, bob) as b:
            stored = {conv: await _history(b, conv) for conv in convs}

    texts_by_conv: dict[str, list[str]] = {}
    for conv, entries in stored.items():
        assert sorted(entries) == list(range(1, len(entries) + 1)), f"gap in {conv}"
        texts_by_conv[conv] = [t for t in entries.values() if t is not None]
    for conv, texts in texts_by_conv.items():
        assert len(texts) == len(set(texts)), f"a message was stored twice in {conv}"
    for cmid, ack in acked.items():
        index = int(cmid[1:])
        assert stored[ack.conv].get(ack.seq) == f"text {index}", f"acked {cmid} lost"
    stored_total = sum(len(t) for t in texts_by_conv.values())
    assert stored_total == len(acked)
