"""The key store (A3) in the owners' own databases: users' keys in ``personal.db``,
organisations' keys in ``organisations.db``. Every method is one transaction in one of them.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from typing import Any

import trio

from storage.errors import AlreadyExists
from storage.keys import KeysDestroyed, OwnerKeys, OwnerKind, WrappedKey, owner_kind
from storage.sqlite.database import BUSY_TIMEOUT_SECONDS, Database

log = logging.getLogger(__name__)

_KEY = "SELECT owner, key_id, wrapped, master_id, created_at, reserved FROM data_keys"


def _key(row: Any) -> WrappedKey:
    return WrappedKey(
        owner=row[0],
        key_id=row[1],
        wrapped=row[2],
        master_id=row[3],
        created_at=row[4],
        reserved=row[5],
    )


def _load(conn: sqlite3.Connection, owner: str) -> OwnerKeys:
    keys = tuple(
        _key(row) for row in conn.execute(f"{_KEY} WHERE owner = ? ORDER BY key_id", (owner,))
    )
    row = conn.execute(
        "SELECT destroyed_at FROM destroyed_key_owners WHERE owner = ?", (owner,)
    ).fetchone()
    return OwnerKeys(owner=owner, keys=keys, destroyed_at=None if row is None else row[0])


class SqliteKeyStore:
    def __init__(self, personal: Database, orgs: Database) -> None:
        self._databases: dict[OwnerKind, Database] = {"user": personal, "org": orgs}

    def _database(self, owner: str) -> Database:
        return self._databases[owner_kind(owner)]

    async def load(self, owner: str) -> OwnerKeys:
        def load(conn: sqlite3.Connection) -> OwnerKeys:
            return _load(conn, owner)

        return await self._database(owner).readers.run("load_keys", load)

    async def add_key(
        self, owner: str, *, key_id: int, wrapped: bytes, master_id: str, reserved: int, now: int
    ) -> WrappedKey:
        def add_key(conn: sqlite3.Connection) -> WrappedKey:
            if conn.execute(
                "SELECT 1 FROM destroyed_key_owners WHERE owner = ?", (owner,)
            ).fetchone():
                raise KeysDestroyed(owner)
            (newest,) = conn.execute(
                "SELECT coalesce(max(key_id), 0) FROM data_keys WHERE owner = ?", (owner,)
            ).fetchone()
            if key_id != newest + 1:
                raise AlreadyExists(f"{owner}: key {key_id} is taken or out of turn")
            conn.execute(
                "INSERT INTO data_keys (owner, key_id, wrapped, master_id, reserved, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (owner, key_id, wrapped, master_id, reserved, now),
            )
            return WrappedKey(
                owner=owner,
                key_id=key_id,
                wrapped=wrapped,
                master_id=master_id,
                created_at=now,
                reserved=reserved,
            )

        return await self._database(owner).writer.run("add_key", add_key)

    async def reserve(
        self, owner: str, key_id: int, *, count: int, limit: int
    ) -> tuple[int, int] | None:
        def reserve(conn: sqlite3.Connection) -> tuple[int, int] | None:
            row = conn.execute(
                "SELECT key_id, reserved FROM data_keys WHERE owner = ?"
                " ORDER BY key_id DESC LIMIT 1",
                (owner,),
            ).fetchone()
            if row is None or row[0] != key_id or row[1] >= limit:
                return None
            end = min(row[1] + max(count, 0), limit)
            conn.execute(
                "UPDATE data_keys SET reserved = ? WHERE owner = ? AND key_id = ?",
                (end, owner, key_id),
            )
            return int(row[1]), int(end)

        return await self._database(owner).writer.run("reserve_key_uses", reserve)

    async def destroy(self, owner: str, *, now: int) -> int:
        def destroy(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM data_keys WHERE owner = ?", (owner,)).rowcount
            conn.execute(
                "INSERT OR IGNORE INTO destroyed_key_owners (owner, destroyed_at) VALUES (?, ?)",
                (owner, now),
            )
            return int(gone)

        database = self._database(owner)
        gone = await database.writer.run("destroy_keys", destroy)
        # secure_delete overwrote the rows in the pages, but the write-ahead log still holds
        # earlier versions of those pages: copy them back and truncate the log to nothing.
        await trio.to_thread.run_sync(_truncate_wal, database)
        return gone

    async def scan(self, kind: OwnerKind, *, after: str, limit: int) -> list[OwnerKeys]:
        prefix = f"{kind}:"

        def scan(conn: sqlite3.Connection) -> list[OwnerKeys]:
            owners = [
                owner
                for (owner,) in conn.execute(
                    "SELECT owner FROM (SELECT owner FROM data_keys UNION"
                    " SELECT owner FROM destroyed_key_owners)"
                    " WHERE owner > ? AND substr(owner, 1, ?) = ? ORDER BY owner LIMIT ?",
                    (after, len(prefix), prefix, limit),
                )
            ]
            return [_load(conn, owner) for owner in owners]

        return await self._databases[kind].readers.run("scan_keys", scan)

    async def rewrap(
        self, owner: str, key_id: int, *, expect_master: str, wrapped: bytes, master_id: str
    ) -> bool:
        def rewrap(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE data_keys SET wrapped = ?, master_id = ?"
                " WHERE owner = ? AND key_id = ? AND master_id = ?",
                (wrapped, master_id, owner, key_id, expect_master),
            )
            return cursor.rowcount == 1

        return await self._database(owner).writer.run("rewrap_key", rewrap)

    async def master_ids(self) -> dict[str, int]:
        def count(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT master_id, count(*) FROM data_keys GROUP BY master_id"
            ).fetchall()
            return {master_id: int(n) for master_id, n in rows}

        total: Counter[str] = Counter()
        for database in self._databases.values():
            total.update(await database.readers.run("key_master_ids", count))
        return dict(total)


def _truncate_wal(database: Database) -> None:
    conn = sqlite3.connect(database.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        # The background checkpointer's lock: SQLite answers a checkpoint "busy" at once
        # while another one runs, and this one must copy and truncate everything.
        with database.checkpoint_lock:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy:
        log.warning(
            "the write-ahead log could not be truncated after destroying keys (busy); it is "
            "on the next checkpoint",
            extra={"database": database.path.name},
        )
