"""The SQLite live-stream store, in ``cross.db`` (the database of the groups streams start in).

Implements ``storage.live.LiveStore``. Every method is one named transaction: writes on the
database's writer thread (group commit, durable before they return), reads on its reader
pool. Schema: ``migrations/cross/0003_live_streams.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.live import LiveRecord, NewLive
from storage.sqlite.cross_delete import prefix_range
from storage.sqlite.database import Database

_STREAM = (
    "SELECT origin, number, host_id, host_device, title, description, started_at, ended_at,"
    " end_reason, peak_viewers, total_viewers FROM live_streams"
)
_IS_ACTIVE = "SELECT 1 FROM live_streams WHERE origin = ? AND number = ? AND ended_at IS NULL"


class SqliteLiveStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    async def start_live(self, live: NewLive) -> LiveRecord:
        def start_live(conn: sqlite3.Connection) -> LiveRecord:
            (highest,) = conn.execute(
                "SELECT coalesce(max(number), 0) FROM live_streams WHERE origin = ?",
                (live.origin,),
            ).fetchone()
            number = int(highest) + 1
            conn.execute(
                "INSERT INTO live_streams (origin, number, host_id, host_device, title,"
                " description, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    live.origin,
                    number,
                    live.host,
                    live.host_device,
                    live.title,
                    live.description,
                    live.started_at,
                ),
            )
            _insert_links(conn, live.origin, number, live.links)
            record = _fetch(conn, live.origin, number)
            assert record is not None
            return record

        return await self._writer.run("start_live", start_live)

    async def add_live_links(self, origin: str, number: int, *, groups: Sequence[str]) -> bool:
        def add_live_links(conn: sqlite3.Connection) -> bool:
            if conn.execute(_IS_ACTIVE, (origin, number)).fetchone() is None:
                return False
            _insert_links(conn, origin, number, groups)
            return True

        return await self._writer.run("add_live_links", add_live_links)

    async def add_live_invites(self, origin: str, number: int, *, users: Sequence[int]) -> bool:
        def add_live_invites(conn: sqlite3.Connection) -> bool:
            if conn.execute(_IS_ACTIVE, (origin, number)).fetchone() is None:
                return False
            conn.executemany(
                "INSERT OR IGNORE INTO live_invited (origin, number, user_id) VALUES (?, ?, ?)",
                [(origin, number, user) for user in users],
            )
            return True

        return await self._writer.run("add_live_invites", add_live_invites)

    async def checkpoint_live(
        self, origin: str, number: int, *, peak_viewers: int, total_viewers: int
    ) -> bool:
        def checkpoint_live(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE live_streams SET peak_viewers = ?, total_viewers = ?"
                " WHERE origin = ? AND number = ? AND ended_at IS NULL",
                (peak_viewers, total_viewers, origin, number),
            )
            return cursor.rowcount == 1

        return await self._writer.run("checkpoint_live", checkpoint_live)

    async def end_live(
        self,
        origin: str,
        number: int,
        *,
        ended_at: int,
        reason: str,
        peak_viewers: int,
        total_viewers: int,
    ) -> LiveRecord | None:
        def end_live(conn: sqlite3.Connection) -> LiveRecord | None:
            conn.execute(
                "UPDATE live_streams SET ended_at = ?, end_reason = ?, peak_viewers = ?,"
                " total_viewers = ? WHERE origin = ? AND number = ? AND ended_at IS NULL",
                (ended_at, reason, peak_viewers, total_viewers, origin, number),
            )
            return _fetch(conn, origin, number)

        return await self._writer.run("end_live", end_live)

    async def get_live(self, origin: str, number: int) -> LiveRecord | None:
        def get_live(conn: sqlite3.Connection) -> LiveRecord | None:
            return _fetch(conn, origin, number)

        return await self._readers.run("get_live", get_live)

    async def delete_lives(self, origin_prefix: str, *, limit: int) -> int:
        low, high = prefix_range(origin_prefix)

        def delete_lives(conn: sqlite3.Connection) -> int:
            keys = conn.execute(
                "SELECT origin, number FROM live_streams WHERE origin >= ? AND origin < ?"
                " ORDER BY origin, number LIMIT ?",
                (low, high, max(limit, 1)),
            ).fetchall()
            for origin, number in keys:
                for table in ("live_links", "live_invited", "live_streams"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE origin = ? AND number = ?", (origin, number)
                    )
            return len(keys)

        return await self._writer.run("delete_lives", delete_lives)

    async def active_lives(self) -> list[LiveRecord]:
        def active_lives(conn: sqlite3.Connection) -> list[LiveRecord]:
            rows = conn.execute(
                f"{_STREAM} WHERE ended_at IS NULL ORDER BY started_at, origin, number"
            ).fetchall()
            return [_record(conn, row) for row in rows]

        return await self._readers.run("active_lives", active_lives)


def _insert_links(
    conn: sqlite3.Connection, origin: str, number: int, groups: Sequence[str]
) -> None:
    (position,) = conn.execute(
        "SELECT coalesce(max(position), 0) FROM live_links WHERE origin = ? AND number = ?",
        (origin, number),
    ).fetchone()
    for group in dict.fromkeys(groups):
        if group == origin:
            continue
        position += 1
        cursor = conn.execute(
            "INSERT OR IGNORE INTO live_links (origin, number, position, conv_id)"
            " VALUES (?, ?, ?, ?)",
            (origin, number, position, group),
        )
        if cursor.rowcount == 0:
            position -= 1  # already linked: keep positions dense


def _fetch(conn: sqlite3.Connection, origin: str, number: int) -> LiveRecord | None:
    row = conn.execute(f"{_STREAM} WHERE origin = ? AND number = ?", (origin, number)).fetchone()
    return None if row is None else _record(conn, row)


def _record(conn: sqlite3.Connection, row: tuple[Any, ...]) -> LiveRecord:
    origin, number = row[0], row[1]
    links = conn.execute(
        "SELECT conv_id FROM live_links WHERE origin = ? AND number = ? ORDER BY position",
        (origin, number),
    ).fetchall()
    invited = conn.execute(
        "SELECT user_id FROM live_invited WHERE origin = ? AND number = ? ORDER BY user_id",
        (origin, number),
    ).fetchall()
    return LiveRecord(
        origin=origin,
        number=number,
        host=row[2],
        host_device=row[3],
        title=row[4],
        description=row[5],
        links=tuple(g for (g,) in links),
        invited=tuple(u for (u,) in invited),
        started_at=row[6],
        ended_at=row[7],
        end_reason=row[8],
        peak_viewers=row[9],
        total_viewers=row[10],
    )
