"""Organisations (P2-P5, O5), consent (D4) and the admin paths (D5, O1, O2, P3).

Admin ops read only the organisation's own store, through the router's policy module. What
an admin sees of a member's cross-domain activity is the organisation's *copies*: made only
while that member consented (D4), holding only the member's own content, its time and an
opaque conversation reference (``conv_ref``), never other participants' data or the
conversation's sequence numbers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol import limits
from protocol.events import Event
from protocol.replies import Done, Result
from protocol.requests import FileRef, Request
from protocol.types import ContentKind, Name, OrgId, PageLimit, Timestamp, UserId

RequestId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
CopyId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
Cursor = Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
Disclosure = Annotated[str, Meta(max_length=limits.MAX_DISCLOSURE_CHARS)]
Note = Annotated[str, Meta(max_length=limits.MAX_NAME_CHARS)]
ConvRef = Annotated[str, Meta(min_length=1, max_length=64)]
PermissionName = Literal["members", "audit", "export", "search", "moderate", "admins"]
OrgRoleName = Literal["primary", "admin", "member"]
RequestKindName = Literal["invite", "apply", "member_invite"]
RequestStatusName = Literal["pending_user", "pending_admin", "accepted", "declined", "cancelled"]


# --- organisations and joining (P2-P4, O5) --------------------------------------------------


class OrgCreate(Request, tag="org.create", frozen=True):
    """Create an organisation; the caller becomes its primary admin (P3). ``disclosure``
    (O5) is shown to everyone before they join. Idempotent by (caller, name): a resend
    returns the organisation the first request created."""

    name: Name
    disclosure: Disclosure = ""


class OrgGet(Request, tag="org.get", frozen=True):
    org: OrgId


class OrgMine(Request, tag="org.mine", frozen=True):
    """The caller's current memberships."""


class OrgInvite(Request, tag="org.invite", frozen=True):
    """An admin's invitation goes to the user; a member's waits for an admin first (P4)."""

    org: OrgId
    user: UserId
    note: Note = ""


class OrgApply(Request, tag="org.apply", frozen=True):
    """Ask to join; an admin approves (P4)."""

    org: OrgId
    note: Note = ""


class OrgReview(Request, tag="org.review", frozen=True):
    """An admin approves or declines an application or a member's invitation."""

    org: OrgId
    request_id: RequestId
    approve: bool


class OrgAnswer(Request, tag="org.answer", frozen=True):
    """The invited user accepts (recording the disclosure they saw, O5) or declines.
    Accepting never grants consent (D4)."""

    org: OrgId
    request_id: RequestId
    accept: bool


class OrgRequests(Request, tag="org.requests", frozen=True):
    """Admins with ``members`` see every request; anyone else sees their own."""

    org: OrgId


class OrgLeave(Request, tag="org.leave", frozen=True):
    org: OrgId


class OrgRemove(Request, tag="org.remove", frozen=True):
    org: OrgId
    user: UserId


class OrgMembers(Request, tag="org.members", frozen=True):
    org: OrgId
    after_user: Cursor = 0
    limit: PageLimit = limits.DEFAULT_PAGE


class OrgSetAdmin(Request, tag="org.set_admin", frozen=True):
    """Make a member a sub-admin with the given permissions, or a plain member (P3)."""

    org: OrgId
    user: UserId
    role: Literal["admin", "member"]
    permissions: Annotated[list[PermissionName], Meta(max_length=8)] = msgspec.field(
        default_factory=list
    )


class OrgDissolve(Request, tag="org.dissolve", frozen=True):
    """O4, step one: the primary admin asks; the reply says what would be deleted and
    carries a confirmation token valid for a few minutes. Nothing is deleted yet."""

    org: OrgId


class OrgDissolveConfirm(Request, tag="org.dissolve_confirm", frozen=True):
    """O4, step two: with the token, dissolution starts. The organisation is gone for every
    path at once; its store is deleted by a job that finishes after a crash. Cross-domain
    conversations stay with their participants."""

    org: OrgId
    token: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TOKEN_CHARS)]


# --- consent (D4) ------------------------------------------------------------------------------


class ConsentSet(Request, tag="consent.set", frozen=True):
    """Grant or revoke, alone, the organisation's access to what the caller produces in
    cross-domain conversations from now on. Copies made while consent held stay."""

    org: OrgId
    granted: bool


class ConsentList(Request, tag="consent.list", frozen=True):
    pass


# --- admin paths (D5) ----------------------------------------------------------------------------


class AdminSearch(Request, tag="admin.search", frozen=True):
    """Organisation-visible messages (its copies) by member, conversation and time."""

    org: OrgId
    member: UserId | None = None
    conv_ref: ConvRef | None = None
    from_ts: Timestamp | None = None
    to_ts: Timestamp | None = None
    after: Cursor = 0
    limit: PageLimit = limits.DEFAULT_PAGE


class AdminExport(Request, tag="admin.export", frozen=True):
    """One page of the organisation's export, in copy order; repeat with ``after``."""

    org: OrgId
    member: UserId | None = None
    from_ts: Timestamp | None = None
    to_ts: Timestamp | None = None
    after: Cursor = 0
    limit: PageLimit = limits.MAX_PAGE


class AdminCounts(Request, tag="admin.counts", frozen=True):
    """Visible copies per member."""

    org: OrgId


class AdminHide(Request, tag="admin.hide", frozen=True):
    """O2: hide or show a copy in the organisation's own view."""

    org: OrgId
    copy_id: CopyId
    hidden: bool


class AdminRecall(Request, tag="admin.recall", frozen=True):
    """O1: recall a copy: its content is erased from the organisation's store. A
    cross-domain conversation is never rewritten by an admin."""

    org: OrgId
    copy_id: CopyId


class AdminAudit(Request, tag="admin.audit", frozen=True):
    """The organisation's audit log of admin acts (P3)."""

    org: OrgId
    after: Cursor = 0
    limit: PageLimit = limits.DEFAULT_PAGE


class AdminFeed(Request, tag="admin.feed", frozen=True):
    """Start (``on``) or stop the real-time audit feed: ``ev.org.copy`` for each new copy
    and ``ev.org.audit`` for each admin act, on this connection."""

    org: OrgId
    on: bool


# --- results -------------------------------------------------------------------------------------


class OrgInfo(Result, frozen=True):
    org: OrgId
    name: str
    disclosure: str
    verified: bool
    created_at: Timestamp


class OrgResult(Result, frozen=True):
    org: OrgInfo


class Membership(Result, frozen=True):
    org: OrgId
    name: str
    role: OrgRoleName
    permissions: list[str]
    joined_at: Timestamp


class Memberships(Result, frozen=True):
    orgs: list[Membership]


class JoinRequestInfo(Result, frozen=True):
    org: OrgId
    request_id: RequestId
    user: UserId
    kind: RequestKindName
    inviter: UserId
    status: RequestStatusName
    disclosure: str
    note: str
    updated_at: Timestamp


class JoinRequestResult(Result, frozen=True):
    request: JoinRequestInfo


class JoinRequests(Result, frozen=True):
    requests: list[JoinRequestInfo]


class OrgMemberInfo(Result, frozen=True):
    user: UserId
    role: OrgRoleName
    permissions: list[str]
    joined_at: Timestamp


class OrgMemberPage(Result, frozen=True):
    org: OrgId
    members: list[OrgMemberInfo]
    next_after: int | None


class DissolutionSummary(Result, frozen=True):
    """What dissolving deletes: the organisation's members (their memberships only), its
    copies of members' messages, join requests and audit log, its own conversations (D2)
    and its enterprise accounts (P5)."""

    org: OrgId
    name: str
    members: int
    copies: int
    requests: int
    audit_entries: int
    token: str
    expires_at: Timestamp
    conversations: int = 0
    enterprise_accounts: int = 0


class ConsentState(Result, frozen=True):
    org: OrgId
    granted: bool
    at: Timestamp


class Consents(Result, frozen=True):
    consents: list[ConsentState]


class CopyContent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Only what the member produced: no mentions, no quotes, nobody else's words."""

    kind: ContentKind = "text"
    text: str = ""
    file: FileRef | None = None


#: What a copy was made from: a message the member sent, or a DING (issue #4).
CopyOrigin = Literal["message", "ding"]


class CopyInfo(Result, frozen=True, omit_defaults=True):
    """Every field but ``origin`` is required; ``origin`` is left out for a message's copy,
    so copies of messages encode as they did before DINGs were copied."""

    copy_id: CopyId
    member: UserId
    conv_ref: str
    ts: Timestamp
    content: CopyContent | None
    hidden: bool
    recalled: bool
    origin: CopyOrigin = "message"


class CopyPage(Result, frozen=True):
    org: OrgId
    copies: list[CopyInfo]
    next_after: int | None


class MemberCount(Result, frozen=True):
    member: UserId
    messages: int


class CopyCounts(Result, frozen=True):
    org: OrgId
    counts: list[MemberCount]


class AuditInfo(Result, frozen=True):
    audit_id: int
    actor: UserId
    action: str
    target: str
    ts: Timestamp


class AuditPage(Result, frozen=True):
    org: OrgId
    entries: list[AuditInfo]
    next_after: int | None


class CopyResult(Result, frozen=True):
    copy: CopyInfo


# --- events ------------------------------------------------------------------------------


class OrgRequestEvent(Event, tag="ev.org.request", frozen=True):
    """A join request that waits for the receiver (the invited user, or the admins)."""

    request: JoinRequestInfo


class OrgCopyEvent(Event, tag="ev.org.copy", frozen=True):
    """Real-time audit feed: a new copy in the organisation's store."""

    org: OrgId
    copy: CopyInfo


class OrgAuditEvent(Event, tag="ev.org.audit", frozen=True):
    """Real-time audit feed: an admin act."""

    org: OrgId
    entry: AuditInfo


OrgRequest = (
    OrgCreate
    | OrgGet
    | OrgMine
    | OrgInvite
    | OrgApply
    | OrgReview
    | OrgAnswer
    | OrgRequests
    | OrgLeave
    | OrgRemove
    | OrgMembers
    | OrgSetAdmin
    | OrgDissolve
    | OrgDissolveConfirm
    | ConsentSet
    | ConsentList
    | AdminSearch
    | AdminExport
    | AdminCounts
    | AdminHide
    | AdminRecall
    | AdminAudit
    | AdminFeed
)

OrgEvent = OrgRequestEvent | OrgCopyEvent | OrgAuditEvent

ORG_RESULT_TYPES: dict[type[Request], type[Result]] = {
    OrgCreate: OrgResult,
    OrgGet: OrgResult,
    OrgMine: Memberships,
    OrgInvite: JoinRequestResult,
    OrgApply: JoinRequestResult,
    OrgReview: JoinRequestResult,
    OrgAnswer: JoinRequestResult,
    OrgRequests: JoinRequests,
    OrgLeave: Done,
    OrgRemove: Done,
    OrgMembers: OrgMemberPage,
    OrgSetAdmin: Done,
    OrgDissolve: DissolutionSummary,
    OrgDissolveConfirm: Done,
    ConsentSet: ConsentState,
    ConsentList: Consents,
    AdminSearch: CopyPage,
    AdminExport: CopyPage,
    AdminCounts: CopyCounts,
    AdminHide: CopyResult,
    AdminRecall: CopyResult,
    AdminAudit: AuditPage,
    AdminFeed: Done,
}
