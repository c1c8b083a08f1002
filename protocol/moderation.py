"""Platform moderation (rule C1): users report a message or a user to the platform's
moderators. The moderators' own acts (hide, remove, suspend) are operator commands
(``rivet moderate``), not protocol ops; clients see their effects: a removed message comes
as ``ev.recall`` with ``by`` 0, a suspended account is closed with 4005.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from protocol import limits
from protocol.replies import Result
from protocol.requests import Request
from protocol.types import ConversationId, UserId

#: Why a user reports: spam or unauthorised promotion (C2), harassment or abuse, fraud,
#: illegal content, anything else (explained in ``note``).
ReportReason = Literal["spam", "abuse", "fraud", "illegal", "other"]
ReportNote = Annotated[str, Meta(max_length=limits.MAX_REPORT_NOTE_CHARS)]
ReportId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]


class Report(Request, tag="report", frozen=True):
    """Report one message (``conv`` and ``seq``) or one user (``user``), not both."""

    reason: ReportReason
    conv: ConversationId | None = None
    seq: Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)] | None = None
    user: UserId | None = None
    note: ReportNote = ""


class Reported(Result, frozen=True):
    report_id: ReportId
    #: True when the caller had already reported this message or user and that report is
    #: still open: nothing new was stored.
    duplicate: bool


MODERATION_RESULT_TYPES: dict[type[Request], type[Result]] = {Report: Reported}
