"""Platform moderation (rule C1): users' reports and the log of moderators' acts.

This is the platform's own data, neither personal (D1) nor an organisation's (D2): it lives
in a database of its own (``moderation.db``) that no organisation path reads (D5). The acts'
effects live where the data they act on lives: a hidden or removed message is a tombstone in
the cross-domain store (a recall by the platform), a suspension is the user's ``suspended``
flag in the personal store. This store keeps what was reported and what was done, by whom
and why.

Contracts, for every implementation (``tests/storage/test_moderation_conformance.py``):

* each method is one transaction, durable before it returns (see ``storage.interfaces``);
* report ids and act ids are handed out in commit order, from 1, never reused;
* the log is append-only: nothing here deletes an act or changes what it records, but for
  one thing: a ``remove`` erases the evidence that earlier acts (a ``hide``) kept of the
  same message, since the platform keeps no copy of removed content;
* the store decides nothing: who may report what is the router's policy, what an act does
  is the operator command's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

ReportStatus = Literal["open", "actioned", "dismissed"]
ActAction = Literal["hide", "remove", "suspend", "unsuspend", "dismiss"]


class NewReport(msgspec.Struct, frozen=True, kw_only=True):
    reporter: int
    #: The user reported, or the sender of the message reported.
    target_user: int
    #: The message reported (both None when a user is reported).
    conv_id: str | None = None
    seq: int | None = None
    reason: str
    note: str = ""
    #: The message's stored body when it was reported, kept as evidence (the sender may
    #: recall it afterwards). None for a user report or a message already recalled.
    evidence: bytes | None = None
    created_at: int


class ReportRecord(msgspec.Struct, frozen=True, kw_only=True):
    report_id: int
    reporter: int
    target_user: int
    conv_id: str | None
    seq: int | None
    reason: str
    note: str
    evidence: bytes | None
    created_at: int
    status: ReportStatus = "open"
    #: The act that closed it.
    closed_by_act: int | None = None


class NewAct(msgspec.Struct, frozen=True, kw_only=True):
    action: ActAction
    #: Who did it: the operator's name as given to ``rivet moderate --operator``.
    operator: str
    reason: str
    target_user: int | None = None
    conv_id: str | None = None
    seq: int | None = None
    #: For ``hide``: the content taken out of the conversation, kept for review and appeal.
    #: ``remove`` keeps none.
    evidence: bytes | None = None
    #: Reports this act answers: each one still open is closed with it (``actioned``, or
    #: ``dismissed`` for a ``dismiss`` act); others are left as they are.
    report_ids: tuple[int, ...] = ()
    created_at: int


class ActRecord(msgspec.Struct, frozen=True, kw_only=True):
    act_id: int
    action: ActAction
    operator: str
    reason: str
    target_user: int | None
    conv_id: str | None
    seq: int | None
    evidence: bytes | None
    report_ids: tuple[int, ...]
    created_at: int


class ModerationStore(Protocol):
    async def add_report(self, report: NewReport) -> tuple[ReportRecord, bool]:
        """Store a report; returns it and False. If the same reporter already has an open
        report on the same target (the same message, or the same user for a user report),
        returns that one and True and stores nothing."""

    async def get_report(self, report_id: int) -> ReportRecord | None: ...

    async def list_reports(
        self, *, status: ReportStatus | None, after_id: int, limit: int
    ) -> list[ReportRecord]:
        """Reports with ``report_id > after_id`` (of ``status`` when given), ascending, at
        most ``limit``."""

    async def record_act(self, act: NewAct) -> ActRecord:
        """Append ``act`` to the log with the next act id and, in the same transaction,
        close every report of ``act.report_ids`` that is still open. For a ``remove`` act,
        also erase the evidence of every report and every earlier act naming the same
        message (the platform keeps no copy of removed content)."""

    async def acts(self, *, after_id: int, limit: int) -> list[ActRecord]:
        """Acts with ``act_id > after_id``, ascending, at most ``limit``."""

    async def last_act_id(self) -> int:
        """The newest act id (0 when the log is empty)."""


def closing_status(action: ActAction) -> ReportStatus:
    """What an act makes of the open reports it answers."""
    return "dismissed" if action == "dismiss" else "actioned"


def same_target(record: ReportRecord, report: NewReport) -> bool:
    """True when an earlier report names the same target as a new one."""
    if report.conv_id is None:
        return record.conv_id is None and record.target_user == report.target_user
    return (record.conv_id, record.seq) == (report.conv_id, report.seq)


def open_duplicate(reports: Sequence[ReportRecord], report: NewReport) -> ReportRecord | None:
    """The reporter's open report on the same target among ``reports``, if any."""
    for record in reports:
        mine = record.status == "open" and record.reporter == report.reporter
        if mine and same_target(record, report):
            return record
    return None
