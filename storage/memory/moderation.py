"""The in-memory moderation store: the reference implementation of ``ModerationStore``.

No method awaits, so each is atomic under trio.
"""

from __future__ import annotations

from msgspec.structs import replace

from storage.moderation import (
    ActRecord,
    NewAct,
    NewReport,
    ReportRecord,
    ReportStatus,
    closing_status,
    open_duplicate,
)


class MemoryModerationStore:
    def __init__(self) -> None:
        self._reports: dict[int, ReportRecord] = {}
        self._acts: list[ActRecord] = []

    async def add_report(self, report: NewReport) -> tuple[ReportRecord, bool]:
        earlier = open_duplicate(list(self._reports.values()), report)
        if earlier is not None:
            return earlier, True
        record = ReportRecord(
            report_id=len(self._reports) + 1,
            reporter=report.reporter,
            target_user=report.target_user,
            conv_id=report.conv_id,
            seq=report.seq,
            reason=report.reason,
            note=report.note,
            evidence=report.evidence,
            created_at=report.created_at,
        )
        self._reports[record.report_id] = record
        return record, False

    async def get_report(self, report_id: int) -> ReportRecord | None:
        return self._reports.get(report_id)

    async def list_reports(
        self, *, status: ReportStatus | None, after_id: int, limit: int
    ) -> list[ReportRecord]:
        found = [
            r
            for r in self._reports.values()
            if r.report_id > after_id and (status is None or r.status == status)
        ]
        return sorted(found, key=lambda r: r.report_id)[:limit]

    async def record_act(self, act: NewAct) -> ActRecord:
        record = ActRecord(
            act_id=len(self._acts) + 1,
            action=act.action,
            operator=act.operator,
            reason=act.reason,
            target_user=act.target_user,
            conv_id=act.conv_id,
            seq=act.seq,
            evidence=act.evidence,
            report_ids=tuple(act.report_ids),
            created_at=act.created_at,
        )
        status = closing_status(act.action)
        self._acts.append(record)
        if act.action == "remove":
            for report_id, report in list(self._reports.items()):
                if (report.conv_id, report.seq) == (act.conv_id, act.seq):
                    self._reports[report_id] = replace(report, evidence=None)
            # C1: an earlier ``hide`` of the same message kept its words for review.
            for index, earlier in enumerate(self._acts):
                if (earlier.conv_id, earlier.seq) == (act.conv_id, act.seq):
                    self._acts[index] = replace(earlier, evidence=None)
        for report_id in act.report_ids:
            named = self._reports.get(report_id)
            if named is not None and named.status == "open":
                self._reports[report_id] = replace(
                    named, status=status, closed_by_act=record.act_id
                )
        return record

    async def acts(self, *, after_id: int, limit: int) -> list[ActRecord]:
        return [a for a in self._acts if a.act_id > after_id][:limit]

    async def last_act_id(self) -> int:
        return self._acts[-1].act_id if self._acts else 0
