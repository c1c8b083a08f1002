"""The SQLite moderation store (C1), in ``moderation.db``: implements ``ModerationStore``.

Every method is one named transaction: writes on the database's writer thread (durable
before they return), reads on its reader pool. Schema: ``migrations/moderation/``.
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from storage.moderation import (
    ActAction,
    ActRecord,
    NewAct,
    NewReport,
    ReportRecord,
    ReportStatus,
    closing_status,
    open_duplicate,
)
from storage.sqlite.database import Database

_REPORT = (
    "SELECT report_id, reporter, target_user, conv_id, seq, reason, note, evidence,"
    " created_at, status, closed_by_act FROM reports"
)
_ACT = (
    "SELECT act_id, action, operator, reason, target_user, conv_id, seq, evidence,"
    " report_ids, created_at FROM acts"
)


class SqliteModerationStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    async def add_report(self, report: NewReport) -> tuple[ReportRecord, bool]:
        def add_report(conn: sqlite3.Connection) -> tuple[ReportRecord, bool]:
            rows = conn.execute(
                f"{_REPORT} WHERE reporter = ? AND target_user = ? AND status = 'open'",
                (report.reporter, report.target_user),
            ).fetchall()
            earlier = open_duplicate([_report(row) for row in rows], report)
            if earlier is not None:
                return earlier, True
            cursor = conn.execute(
                "INSERT INTO reports (reporter, target_user, conv_id, seq, reason, note,"
                " evidence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.reporter,
                    report.target_user,
                    report.conv_id,
                    report.seq,
                    report.reason,
                    report.note,
                    report.evidence,
                    report.created_at,
                ),
            )
            row = conn.execute(f"{_REPORT} WHERE report_id = ?", (cursor.lastrowid,)).fetchone()
            return _report(row), False

        return await self._writer.run("add_report", add_report)

    async def get_report(self, report_id: int) -> ReportRecord | None:
        def get_report(conn: sqlite3.Connection) -> ReportRecord | None:
            row = conn.execute(f"{_REPORT} WHERE report_id = ?", (report_id,)).fetchone()
            return None if row is None else _report(row)

        return await self._readers.run("get_report", get_report)

    async def list_reports(
        self, *, status: ReportStatus | None, after_id: int, limit: int
    ) -> list[ReportRecord]:
        def list_reports(conn: sqlite3.Connection) -> list[ReportRecord]:
            rows = conn.execute(
                f"{_REPORT} WHERE report_id > ? AND (? IS NULL OR status = ?)"
                " ORDER BY report_id LIMIT ?",
                (after_id, status, status, limit),
            ).fetchall()
            return [_report(row) for row in rows]

        return await self._readers.run("list_reports", list_reports)

    async def record_act(self, act: NewAct) -> ActRecord:
        def record_act(conn: sqlite3.Connection) -> ActRecord:
            cursor = conn.execute(
                "INSERT INTO acts (action, operator, reason, target_user, conv_id, seq,"
                " evidence, report_ids, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    act.action,
                    act.operator,
                    act.reason,
                    act.target_user,
                    act.conv_id,
                    act.seq,
                    act.evidence,
                    ",".join(str(r) for r in act.report_ids),
                    act.created_at,
                ),
            )
            act_id = cursor.lastrowid
            status = closing_status(act.action)
            if act.action == "remove":
                conn.execute(
                    "UPDATE reports SET evidence = NULL WHERE conv_id = ? AND seq = ?",
                    (act.conv_id, act.seq),
                )
                # C1: an earlier ``hide`` of the same message kept its words for review.
                conn.execute(
                    "UPDATE acts SET evidence = NULL WHERE conv_id = ? AND seq = ?",
                    (act.conv_id, act.seq),
                )
            conn.executemany(
                "UPDATE reports SET status = ?, closed_by_act = ?"
                " WHERE report_id = ? AND status = 'open'",
                [(status, act_id, report_id) for report_id in act.report_ids],
            )
            row = conn.execute(f"{_ACT} WHERE act_id = ?", (act_id,)).fetchone()
            return _act(row)

        return await self._writer.run("record_act", record_act)

    async def acts(self, *, after_id: int, limit: int) -> list[ActRecord]:
        def acts(conn: sqlite3.Connection) -> list[ActRecord]:
            rows = conn.execute(
                f"{_ACT} WHERE act_id > ? ORDER BY act_id LIMIT ?", (after_id, limit)
            ).fetchall()
            return [_act(row) for row in rows]

        return await self._readers.run("moderation_acts", acts)

    async def last_act_id(self) -> int:
        def last_act_id(conn: sqlite3.Connection) -> int:
            (value,) = conn.execute("SELECT coalesce(max(act_id), 0) FROM acts").fetchone()
            return int(value)

        return await self._readers.run("last_act_id", last_act_id)


def _report(row: Any) -> ReportRecord:
    (
        report_id,
        reporter,
        target_user,
        conv_id,
        seq,
        reason,
        note,
        evidence,
        created_at,
        status,
        closed_by_act,
    ) = row
    return ReportRecord(
        report_id=report_id,
        reporter=reporter,
        target_user=target_user,
        conv_id=conv_id,
        seq=seq,
        reason=reason,
        note=note,
        evidence=evidence,
        created_at=created_at,
        status=cast(ReportStatus, status),
        closed_by_act=closed_by_act,
    )


def _act(row: Any) -> ActRecord:
    act_id, action, operator, reason, target_user, conv_id, seq, evidence, reports, at = row
    return ActRecord(
        act_id=act_id,
        action=cast(ActAction, action),
        operator=operator,
        reason=reason,
        target_user=target_user,
        conv_id=conv_id,
        seq=seq,
        evidence=evidence,
        report_ids=tuple(int(r) for r in reports.split(",") if r),
        created_at=at,
    )
