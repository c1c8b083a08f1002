"""The ``member_ranges`` migration (cross domain): a database from the schema before it
upgrades in place and keeps working.

Rows written by the older schema have no earlier ranges (that Rivet overwrote a rejoined
member's range on the add, so there is nothing to carry over): after the upgrade they read
as one range each, exactly as before, and a member added back from then on keeps theirs (M1).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.sqlite import migrations, open_sqlite_stores
from storage.sqlite.stores import CROSS_DB, ORG_CONVERSATIONS_DB
from tests.storage.test_cross_conformance import GROUP, NOW, add, change_members, seqs

REAL_LOAD = migrations.load_migrations


def _version_of(name: str) -> int:
    [found] = [m.version for m in REAL_LOAD("cross") if m.name == name]
    return found


#: The cross schema just before the earlier ranges were kept.
BEFORE = _version_of("member_ranges") - 1


async def _make_old_databases(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every database as the previous Rivet left it: cross migrations up to ``BEFORE``."""
    with monkeypatch.context() as patched:
        patched.setattr(
            migrations,
            "load_migrations",
            lambda domain: REAL_LOAD(domain)[:BEFORE] if domain == "cross" else REAL_LOAD(domain),
        )
        async with open_sqlite_stores(data):
            pass


def _write_old_rows(path: Path) -> None:
    """A group as the old schema kept it: 1 owns it, 2 was removed at seq 3, 3 was removed
    and added back at seq 4 (their earlier range already forgotten, read position kept)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO conversations (conv_id, kind, title, owner_id, created_at,"
                " member_limit, last_seq, last_stream, member_count)"
                " VALUES (?, 'group', 'team', 1, ?, 500, 5, 5, 2)",
                (GROUP, NOW),
            )
            conn.executemany(
                "INSERT INTO members (conv_id, user_id, role, visible_from, left_seq, read_seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (GROUP, 1, "owner", 1, None, 5),
                    (GROUP, 2, "member", 1, 3, 2),
                    (GROUP, 3, "member", 4, None, 2),
                ],
            )
            conn.executemany(
                "INSERT INTO entries (conv_id, seq, kind, sender, ts, body)"
                " VALUES (?, ?, ?, 1, ?, ?)",
                [
                    (GROUP, 1, "system", NOW, b"created"),
                    (GROUP, 2, "message", NOW, b"hello"),
                    (GROUP, 3, "system", NOW, b"removed 2"),
                    (GROUP, 4, "system", NOW, b"added 3 back"),
                    (GROUP, 5, "message", NOW, b"again"),
                ],
            )
    finally:
        conn.close()


def _versions(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version, domain FROM schema_version ORDER BY version")
        return rows.fetchall()
    finally:
        conn.close()


async def test_a_database_from_the_previous_schema_upgrades_and_keeps_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    await _make_old_databases(data, monkeypatch)
    assert _versions(data / CROSS_DB)[-1] == (BEFORE, "cross")
    _write_old_rows(data / CROSS_DB)

    async with open_sqlite_stores(data) as stores:
        latest = len(REAL_LOAD("cross"))
        for name in (CROSS_DB, ORG_CONVERSATIONS_DB):
            assert _versions(data / name) == [(v, "cross") for v in range(1, latest + 1)]

        # The old rows read as before: one range each.
        departed = await stores.cross.get_member(GROUP, 2)
        readded = await stores.cross.get_member(GROUP, 3)
        assert departed is not None and departed.ranges == ((1, 3),)
        assert readded is not None and readded.ranges == ((4, None),)
        assert readded.read_seq == 2
        assert seqs(await stores.cross.entries_for(2, after=0, limit=10)) == [1, 2, 3]
        assert seqs(await stores.cross.entries_for(3, after=0, limit=10)) == [4, 5]
        [summary] = await stores.cross.summaries(3, changed_after=0)
        assert summary.unread == 1  # seq 5
        assert await stores.cross.joined_after(GROUP, 2) == [3]

        # Added back after the upgrade, 2 keeps what they saw before (M1).
        await change_members(stores.cross, add(2))  # seq 6
        member = await stores.cross.get_member(GROUP, 2)
        assert member is not None and member.ranges == ((1, 3), (6, None))
        assert seqs(await stores.cross.entries_for(2, after=0, limit=10)) == [1, 2, 3, 6]

    # Opening again applies nothing twice, and the kept range is still there.
    async with open_sqlite_stores(data) as stores:
        member = await stores.cross.get_member(GROUP, 2)
        assert member is not None and member.earlier == ((1, 3),)
    assert len(_versions(data / CROSS_DB)) == len(REAL_LOAD("cross"))
