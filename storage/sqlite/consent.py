"""Consent records in ``personal.db`` (D1, D4)."""

from __future__ import annotations

import sqlite3

from storage.consent import ConsentChange
from storage.sqlite.database import Database


class SqliteConsentStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    async def set_consent(
        self, *, user_id: int, org_id: int, granted: bool, now: int
    ) -> ConsentChange:
        def set_consent(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO consent (user_id, org_id, at, granted) VALUES (?, ?, ?, ?)",
                (user_id, org_id, now, granted),
            )

        await self._writer.run("set_consent", set_consent)
        return ConsentChange(user_id=user_id, org_id=org_id, granted=granted, at=now)

    async def consent_history(self, user_id: int, org_id: int) -> list[ConsentChange]:
        def history(conn: sqlite3.Connection) -> list[ConsentChange]:
            rows = conn.execute(
                "SELECT at, granted FROM consent WHERE user_id = ? AND org_id = ? ORDER BY change",
                (user_id, org_id),
            ).fetchall()
            return [
                ConsentChange(user_id=user_id, org_id=org_id, granted=bool(g), at=at)
                for at, g in rows
            ]

        return await self._readers.run("consent_history", history)

    async def consents_of(self, user_id: int) -> dict[int, bool]:
        def consents(conn: sqlite3.Connection) -> dict[int, bool]:
            rows = conn.execute(
                "SELECT org_id, granted FROM consent WHERE change IN"
                " (SELECT MAX(change) FROM consent WHERE user_id = ? GROUP BY org_id)"
                " ORDER BY org_id",
                (user_id,),
            ).fetchall()
            return {org_id: bool(g) for org_id, g in rows}

        return await self._readers.run("consents_of", consents)

    async def erase_user(self, user_id: int) -> None:
        def erase(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM consent WHERE user_id = ?", (user_id,))

        await self._writer.run("erase_consent", erase)
