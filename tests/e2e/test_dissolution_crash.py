"""O4 with P5 and A3: dissolving an organisation survives a SIGKILL midway.

The real ``rivet serve`` runs as a subprocess on SQLite (loopback only). An organisation
with personal members who consented (D4), enterprise accounts (P5) with live connections,
copies, requests, audit entries and login records is dissolved; the job deletes its rows
in small chunks with a pause between them (``dissolution_chunk_rows`` and
``dissolution_pause_seconds``, ordinary config), so it takes several rounds. The test waits
until the organisations database shows the deletion partly done, SIGKILLs the server by its
pid, checks the data directory really holds a half-dissolved organisation, restarts the
server on it, and checks that the job finished: rows, copies and keys gone, the enterprise
accounts' sessions closed and their user rows erased, and the cross-domain conversations
still there for their participants.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from client import ClientState, RivetClient, RivetError
from client.connection import RivetConnection
from protocol import PROTOCOL_VERSION, replies
from protocol import enterprise as pe
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id
from storage.enterprise import placeholder_phone
from storage.keys import org_owner, user_owner
from tests.e2e.orgs_world import login_enterprise_at
from tests.e2e.processes import RIVET, create_users, rivet_server
from tests.e2e.waiting import wait_until

PASSWORD = "correct horse battery"
ACCOUNTS = ("ann", "ben", "cat")
MEMBER_MESSAGES = 5
ANN_MESSAGES = 3
#: Per-organisation tables of organisations.db, each keyed by org_id first.
ORG_TABLES = (
    "org_copies",
    "join_requests",
    "org_audit",
    "org_members",
    "enterprise_logins",
    "enterprise_accounts",
)


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the server's database directly (read-only), as an operator's tool would."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _org_rows(data: Path, org: int) -> dict[str, int]:
    db = data / "organisations.db"
    counts = {
        t: _rows(db, f"SELECT count(*) FROM {t} WHERE org_id = ?", org)[0][0] for t in ORG_TABLES
    }
    counts["organisations"] = _rows(db, "SELECT count(*) FROM organisations WHERE org_id = ?", org)[
        0
    ][0]
    return counts


def _rivet(data: Path, *args: str) -> None:
    """An operator's ``rivet`` command on the data directory."""
    subprocess.run(
        [*RIVET, *args, "--data-dir", str(data)], check=True, capture_output=True, timeout=60
    )


async def _login_enterprise(url: str, org: int, account: str) -> ClientState:
    return await login_enterprise_at(url, org, account, PASSWORD)


async def _call(url: str, state: ClientState, request: rq.Request) -> Any:
    async with RivetClient.connect(url, state) as client:
        return await client.request(request)


async def _refused(awaitable: Any) -> int:
    with pytest.raises(RivetError) as error:
        await awaitable
    return error.value.code


async def _hold_open(url: str, state: ClientState, closes: dict[int, int | None]) -> None:
    """A live connection of an enterprise account; records its close code."""
    async with RivetClient.connect(url, state) as client:
        assert state.user_id is not None
        closes[state.user_id] = None
        await client.conn.closed.wait()
        closes[state.user_id] = client.conn.close_code


async def test_o4_dissolution_finishes_after_sigkill_midway(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin, friend, *members = create_users(data, 5, prefix="+1777")
    config = tmp_path / "rivet.toml"
    # Small chunks with a pause: the job takes several rounds, long enough to kill it midway.
    config.write_text("dissolution_chunk_rows = 4\ndissolution_pause_seconds = 0.4\n")
    log = (tmp_path / "server.log").open("wb")
    serve = ("--config", str(config))
    with trio.fail_after(150):
        # 1. The organisation, verified by the operator (P2).
        async with rivet_server(data, *serve, stderr=log) as (_, url):
            created: po.OrgResult = await _call(
                url, admin, po.OrgCreate(rid=0, name="Doomed", disclosure="Doomed audits")
            )
            org = created.org.org
            kept: po.OrgResult = await _call(
                url, friend, po.OrgCreate(rid=0, name="Kept", disclosure="")
            )
        _rivet(data, "org", "verify", "--org", str(org))

        # 2. Members who consented (P4, D4), and enterprise accounts (P5).
        async with rivet_server(data, *serve, stderr=log) as (_, url):
            for member in members:
                assert member.user_id is not None
                invited: po.JoinRequestResult = await _call(
                    url, admin, po.OrgInvite(rid=0, org=org, user=member.user_id)
                )
                await _call(
                    url,
                    member,
                    po.OrgAnswer(
                        rid=0, org=org, request_id=invited.request.request_id, accept=True
                    ),
                )
                await _call(url, member, po.ConsentSet(rid=0, org=org, granted=True))
            accounts: dict[str, int] = {}
            for name in ACCOUNTS:
                made: pe.AccountResult = await _call(
                    url, admin, pe.OrgAccountCreate(rid=0, org=org, account=name, password=PASSWORD)
                )
                accounts[name] = made.account.user
        # O3: ann may talk to outsiders once the operator verified the person behind it.
        _rivet(data, "org", "verify-person", "--org", str(org), "--account", "ann")

        # 3. Conversations, copies, live sessions; dissolve; SIGKILL midway.
        closes: dict[int, int | None] = {}
        assert friend.user_id is not None
        async with rivet_server(data, *serve, stderr=log) as (process, url):
            ent = {name: await _login_enterprise(url, org, name) for name in ACCOUNTS}
            chats = []
            for member in members:
                assert member.user_id is not None
                chat = direct_conversation_id(member.user_id, friend.user_id)
                chats.append(chat)
                async with RivetClient.connect(url, member) as client:
                    for i in range(MEMBER_MESSAGES):
                        await client.send(chat, f"member {member.user_id} says {i}")
            ann_chat = direct_conversation_id(accounts["ann"], friend.user_id)
            async with RivetClient.connect(url, ent["ann"]) as client:
                for i in range(ANN_MESSAGES):
                    await client.send(ann_chat, f"ann says {i}")
            async with RivetClient.connect(url, friend) as client:
                await client.send(ann_chat, "friend answers ann")
            expected_copies = len(members) * MEMBER_MESSAGES + ANN_MESSAGES
            # The outbox relay makes the copies (D4).
            await wait_until(lambda: _org_rows(data, org)["org_copies"] >= expected_copies)
            before = _org_rows(data, org)
            assert before["org_copies"] == expected_copies
            assert before["enterprise_accounts"] == len(ACCOUNTS)
            assert sum(before.values()) - 1 > 5 * 4  # more than five rounds of 4 rows

            async with trio.open_nursery() as nursery:
                for name in ACCOUNTS:
                    nursery.start_soon(_hold_open, url, ent[name], closes)
                await wait_until(lambda: len(closes) == len(ACCOUNTS), step=0.01)
                summary: po.DissolutionSummary = await _call(
                    url, admin, po.OrgDissolve(rid=0, org=org)
                )
                assert summary.copies == expected_copies
                await _call(url, admin, po.OrgDissolveConfirm(rid=0, org=org, token=summary.token))
                # Every enterprise account's live connection is closed by the job's first
                # steps, before a row is deleted (O4 with P5).
                await wait_until(lambda: None not in closes.values(), step=0.01)
            assert set(closes.values()) == {CloseCode.SESSION_REVOKED}
            # Midway: some rows deleted, the organisation itself not yet. Kill it now.
            await wait_until(
                lambda: _org_rows(data, org)["org_copies"] < expected_copies, step=0.005
            )
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        midway = _org_rows(data, org)
        assert midway["organisations"] == 1, "the job finished before the kill"
        assert 0 < midway["org_copies"] < expected_copies
        assert midway["enterprise_accounts"] == len(ACCOUNTS)
        dissolving = _rows(
            data / "organisations.db",
            "SELECT dissolving_at FROM organisations WHERE org_id = ?",
            org,
        )
        assert dissolving[0][0] is not None

        # 4. The same data directory, a new server: the job resumes at start and finishes.
        async with rivet_server(data, *serve, stderr=log) as (_, url):
            await wait_until(lambda: _org_rows(data, org)["organisations"] == 0)
            assert set(_org_rows(data, org).values()) == {0}
            # A3: the organisation's keys are destroyed, so even old backups of its copies
            # are unreadable.
            keys_db = data / "organisations.db"
            assert _rows(
                keys_db, "SELECT count(*) FROM data_keys WHERE owner = ?", org_owner(org)
            ) == [(0,)]
            assert _rows(
                keys_db, "SELECT count(*) FROM destroyed_key_owners WHERE owner = ?", org_owner(org)
            ) == [(1,)]
            # P5: the enterprise accounts cannot log in, nor use their old tokens.
            for name in ACCOUNTS:
                code = await _refused(_login_enterprise(url, org, name))
                assert code == ErrorCode.AUTH_FAILED
                stale = ClientState(
                    access_token=ent[name].access_token, refresh_token=None, user_id=None
                )
                assert await _refused(_call(url, stale, rq.Ping(rid=0))) in (
                    ErrorCode.SESSION_REVOKED,
                    ErrorCode.AUTH_FAILED,
                )
                async with RivetConnection.open(url) as conn:
                    await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION))
                    refresh = rq.TokenRefresh(rid=0, refresh_token=ent[name].refresh_token or "")
                    assert await _refused(conn.request(refresh)) in (
                        ErrorCode.SESSION_REVOKED,
                        ErrorCode.AUTH_FAILED,
                    )
            # Their user rows are erased as a deleted account's are (A1), once the erasure
            # job (resumed too, if the kill came first) has run.
            personal = data / "personal.db"
            ids = sorted(accounts.values())
            marks = ",".join("?" * len(ids))
            query = (
                "SELECT user_id, phone, display_name, erased FROM users"
                f" WHERE user_id IN ({marks}) ORDER BY user_id"
            )
            await wait_until(lambda: all(row[3] == 1 for row in _rows(personal, query, *ids)))
            assert _rows(personal, query, *ids) == [(u, f"deleted:{u}", "", 1) for u in ids]
            for name in ACCOUNTS:
                gone = _rows(
                    personal,
                    "SELECT count(*) FROM users WHERE phone = ?",
                    placeholder_phone(org, name),
                )
                assert gone == [(0,)]
            assert _rows(
                personal, f"SELECT count(*) FROM devices WHERE user_id IN ({marks})", *ids
            ) == [(0,)]
            assert _rows(
                personal, f"SELECT count(*) FROM refresh_sessions WHERE user_id IN ({marks})", *ids
            ) == [(0,)]
            assert _rows(
                personal,
                "SELECT count(*) FROM data_keys WHERE owner = ?",
                user_owner(accounts["ann"]),
            ) == [(0,)]
            # D3: cross-domain conversations stay with their participants.
            async with RivetClient.connect(url, friend) as client:
                for member, chat in zip(members, chats, strict=True):
                    history: replies.History = await client.request(rq.MsgHistory(rid=0, conv=chat))
                    assert [m.content.text for m in history.messages if m.content] == [
                        f"member {member.user_id} says {i}" for i in range(MEMBER_MESSAGES)
                    ]
                # The enterprise account's own words went with it (tombstones keep the
                # seqs); the friend's stay; and the erased account left the chat (A1).
                history = await client.request(rq.MsgHistory(rid=0, conv=ann_chat))
                assert [m.seq for m in history.messages] == list(range(1, ANN_MESSAGES + 3))
                assert [m.content.text if m.content else None for m in history.messages] == [
                    *([None] * ANN_MESSAGES),
                    "friend answers ann",
                    None,
                ]
                left = history.messages[-1].system
                assert left is not None and (left.action, left.users) == ("left", [accounts["ann"]])
                # The other organisation was not touched.
                got: po.OrgResult = await client.request(po.OrgGet(rid=0, org=kept.org.org))
                assert got.org.name == "Kept"
            for member in members:
                mine: po.Memberships = await _call(url, member, po.OrgMine(rid=0))
                assert mine.orgs == []
            gone_org = await _refused(_call(url, admin, po.OrgGet(rid=0, org=org)))
            assert gone_org == ErrorCode.NOT_FOUND
    log.close()
