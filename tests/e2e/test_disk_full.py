"""A full disk (A3), injected through the store: ``--sqlite-max-page-count`` caps each
database, so SQLite fails writes with SQLITE_FULL as on a full filesystem.

While full, every write is refused with ``storage_full`` (4002, retryable), no ack is
given for a write that did not land, a resend of the same cmid is refused again (never a
false ack), and the database holds no partial rows. Once space is back (the server
restarted with a higher ceiling), the clients resend what was refused and everything lands
exactly once, in order.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from client import ClientState, RivetClient, RivetError
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from tests.e2e.processes import create_users, rivet_server
from tests.e2e.test_crash import _history


def _page_count(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def _partial_rows(db: Path) -> list[str]:
    """Every way a write could have landed half: each must be empty."""
    checks = {
        "message without its idempotency key": """
            SELECT e.stream FROM entries e WHERE e.kind = 'message' AND e.cmid IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM idempotency i WHERE i.stream = e.stream)""",
        "idempotency key without its entry": """
            SELECT i.stream FROM idempotency i
            WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.stream = i.stream)""",
        "conversation whose last_seq is not its newest entry": """
            SELECT c.conv_id FROM conversations c
            WHERE c.last_seq != (SELECT coalesce(max(seq), 0) FROM entries e
                                 WHERE e.conv_id = c.conv_id)""",
        "conversation whose member_count is off": """
            SELECT c.conv_id FROM conversations c
            WHERE c.member_count != (SELECT count(*) FROM members m
                                     WHERE m.conv_id = c.conv_id AND m.left_seq IS NULL)""",
    }
    found = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for what, query in checks.items():
            if conn.execute(query).fetchall():
                found.append(what)
    return found


async def _send_until_full(
    url: str, state: ClientState, convs: list[str], tag: str, acked: dict[str, replies.Sent]
) -> list[str]:
    """Send until the store is full, then a few more; returns the refused cmids."""
    refused: list[str] = []
    async with RivetClient.connect(url, state) as client:
        for i in range(5_000):
            cmid = f"{tag}-{i}"
            try:
                acked[cmid] = await client.send(convs[i % len(convs)], cmid, cmid=cmid)
            except RivetError as error:
                assert error.code == ErrorCode.STORAGE_FULL and error.retryable, error
                refused.append(cmid)
                if len(refused) >= 5:
                    break
        # The same cmid again while still full: refused again, never acknowledged.
        for cmid in refused:
            request = state.unacked[cmid]
            try:
                await client.request(request)
            except RivetError as error:
                assert error.code == ErrorCode.STORAGE_FULL
            else:
                raise AssertionError(f"{cmid} was acknowledged while the store was full")
    return refused


async def test_a3_a_full_store_refuses_writes_cleanly_and_they_land_after(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    alice, bob = create_users(data, 2)
    assert alice.user_id and bob.user_id
    direct = direct_conversation_id(alice.user_id, bob.user_id)
    async with rivet_server(data) as (_, url), RivetClient.connect(url, bob) as b:
        group = await b.request(
            rq.GroupCreate(rid=0, cmid="g", title="full", members=[alice.user_id])
        )
        await b.send(direct, "before")
    convs = [direct, group.conv.conv]
    ceiling = _page_count(data / "cross.db") + 6
    acked: dict[str, replies.Sent] = {}

    async with rivet_server(data, "--sqlite-max-page-count", str(ceiling)) as (_, url):
        refused: list[str] = []
        async with trio.open_nursery() as nursery:

            async def run(state: ClientState, tag: str) -> None:
                refused.extend(await _send_until_full(url, state, convs, tag, acked))

            nursery.start_soon(run, alice, "a")
            nursery.start_soon(run, bob, "b")
        async with RivetClient.connect(url, alice) as a:
            while_full = {conv: await _history(a, conv) for conv in convs}
    assert len(acked) > 20 and len(refused) == 10
    stored_texts = {t for entries in while_full.values() for t in entries.values() if t}
    assert set(acked) <= stored_texts  # every ack's message is there...
    assert not stored_texts & set(refused)  # ...and nothing that was refused
    assert _partial_rows(data / "cross.db") == []

    async with rivet_server(data, "--sqlite-max-page-count", str(ceiling * 4)) as (_, url):
        for state in (alice, bob):
            async with RivetClient.connect(url, state) as client:
                pending = list(state.unacked)
                for cmid, ack in zip(pending, await client.resend_unacked(), strict=True):
                    assert not ack.duplicate
                    acked[cmid] = ack
        async with RivetClient.connect(url, alice) as a:
            after = {conv: await _history(a, conv) for conv in convs}
    assert _partial_rows(data / "cross.db") == []
    lost = [c for c, ack in acked.items() if after[ack.conv].get(ack.seq) != c]
    texts = [t for entries in after.values() for t in entries.values() if t]
    gaps = [c for c, e in after.items() if sorted(e) != list(range(1, len(e) + 1))]
    assert (lost, len(texts) - len(set(texts)), gaps) == ([], 0, [])
    assert set(refused) <= set(texts)
