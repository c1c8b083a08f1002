"""M2 in ``organisations.db``: the group-expansion package's ledger and the expansions it
paid for (tables of migration ``organisations/0005_group_capacity.sql``), mixed into
``SqliteOrganisationStore``."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.errors import IdempotencyConflict
from storage.group_capacity import GroupExpansion, GroupPackage, PackageExhausted
from storage.records import IdempotencyKey
from storage.sqlite.readers import ReaderPool
from storage.sqlite.writer import SqliteWriter

_EXPANSION = (
    "SELECT org_id, conv_id, member_limit, expires_at, paid_by, updated_at FROM group_expansions"
)


def _expansion(row: Any) -> GroupExpansion:
    return GroupExpansion(
        org_id=row[0],
        conv_id=row[1],
        member_limit=row[2],
        expires_at=row[3],
        paid_by=row[4],
        updated_at=row[5],
    )


def _package(conn: sqlite3.Connection, org_id: int) -> GroupPackage:
    granted, used = conn.execute(
        "SELECT COALESCE(SUM(CASE kind WHEN 'topup' THEN units END), 0),"
        " COALESCE(SUM(CASE kind WHEN 'expand' THEN units END), 0)"
        " FROM group_package_ledger WHERE org_id = ?",
        (org_id,),
    ).fetchone()
    rows = conn.execute(
        "SELECT sender, SUM(units) FROM group_package_ledger WHERE org_id = ? AND kind = 'expand'"
        " GROUP BY sender HAVING SUM(units) > 0 ORDER BY sender",
        (org_id,),
    )
    return GroupPackage(
        org_id=org_id, granted=granted, used=used, by_member={u: n for u, n in rows}
    )


def _seen(conn: sqlite3.Connection, org_id: int, key: IdempotencyKey) -> bool:
    """Whether ``key`` was used in this organisation's package (conflict if for another
    request)."""
    row = conn.execute(
        "SELECT fingerprint FROM group_package_ledger WHERE org_id = ? AND sender = ?"
        " AND client_id = ?",
        (org_id, key.sender, key.client_id),
    ).fetchone()
    if row is None:
        return False
    if bytes(row[0]) != key.fingerprint:
        raise IdempotencyConflict("idempotency key reused for a different request")
    return True


def _record(
    conn: sqlite3.Connection, org_id: int, key: IdempotencyKey, kind: str, units: int, now: int
) -> None:
    entry_id = conn.execute(
        "SELECT COALESCE(MAX(entry_id), 0) + 1 FROM group_package_ledger WHERE org_id = ?",
        (org_id,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO group_package_ledger (org_id, entry_id, sender, client_id, fingerprint,"
        " kind, units, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (org_id, entry_id, key.sender, key.client_id, key.fingerprint, kind, units, now),
    )


def _require_org(conn: sqlite3.Connection, org_id: int) -> None:
    if conn.execute("SELECT 1 FROM organisations WHERE org_id = ?", (org_id,)).fetchone() is None:
        raise KeyError(f"no organisation {org_id}")


class SqliteGroupCapacity:
    _writer: SqliteWriter
    _readers: ReaderPool

    async def top_up_group_package(
        self, org_id: int, *, units: int, key: IdempotencyKey, now: int
    ) -> tuple[GroupPackage, bool]:
        def top_up(conn: sqlite3.Connection) -> tuple[GroupPackage, bool]:
            _require_org(conn, org_id)
            if _seen(conn, org_id, key):
                return _package(conn, org_id), True
            _record(conn, org_id, key, "topup", units, now)
            return _package(conn, org_id), False

        return await self._writer.run("top_up_group_package", top_up)

    async def group_package(self, org_id: int) -> GroupPackage:
        return await self._readers.run("group_package", lambda conn: _package(conn, org_id))

    async def expand_group(
        self,
        org_id: int,
        *,
        conv_id: str,
        member_limit: int,
        price: int,
        period_ms: int,
        key: IdempotencyKey,
        now: int,
    ) -> tuple[GroupExpansion, bool]:
        def current(conn: sqlite3.Connection) -> GroupExpansion | None:
            row = conn.execute(
                f"{_EXPANSION} WHERE org_id = ? AND conv_id = ? AND member_limit = ?",
                (org_id, conv_id, member_limit),
            ).fetchone()
            return _expansion(row) if row else None

        def expand(conn: sqlite3.Connection) -> tuple[GroupExpansion, bool]:
            _require_org(conn, org_id)
            if _seen(conn, org_id, key):
                found = current(conn)
                assert found is not None  # the same key bought this very expansion
                return found, True
            if _package(conn, org_id).remaining < price:
                raise PackageExhausted(f"the package has fewer than {price} units left")
            _record(conn, org_id, key, "expand", price, now)
            existing = current(conn)
            if existing is None:
                expansion_id = conn.execute(
                    "SELECT COALESCE(MAX(expansion_id), 0) + 1 FROM group_expansions"
                    " WHERE org_id = ?",
                    (org_id,),
                ).fetchone()[0]
                conn.execute(
                    "INSERT INTO group_expansions (org_id, expansion_id, conv_id, member_limit,"
                    " expires_at, paid_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (org_id, expansion_id, conv_id, member_limit, now + period_ms, key.sender, now),
                )
            else:
                conn.execute(
                    "UPDATE group_expansions SET expires_at = ?, paid_by = ?, updated_at = ?"
                    " WHERE org_id = ? AND conv_id = ? AND member_limit = ?",
                    (
                        max(now, existing.expires_at) + period_ms,
                        key.sender,
                        now,
                        org_id,
                        conv_id,
                        member_limit,
                    ),
                )
            found = current(conn)
            assert found is not None
            return found, False

        return await self._writer.run("expand_group", expand)

    async def group_expansions(self, conv_id: str) -> list[GroupExpansion]:
        def expansions(conn: sqlite3.Connection) -> list[GroupExpansion]:
            rows = conn.execute(
                "SELECT e.org_id, e.conv_id, e.member_limit, e.expires_at, e.paid_by,"
                " e.updated_at FROM group_expansions e JOIN organisations o"
                " ON o.org_id = e.org_id WHERE e.conv_id = ? AND o.dissolving_at IS NULL"
                " ORDER BY e.member_limit, e.org_id",
                (conv_id,),
            )
            return [_expansion(r) for r in rows]

        return await self._readers.run("group_expansions", expansions)
