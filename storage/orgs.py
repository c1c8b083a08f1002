"""D2, the organisation domain: organisations, their members and admins, join requests, the
organisation's copies of its members' messages, and its audit log.

An organisation is the controller of this data (§4.3). Everything an admin path shows is
read from here and nowhere else (D5); the router's policy module is the only gate to it.
Every method is one transaction in the organisation's own storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from storage.enterprise import AccountStatus, EnterpriseAccount, LoginRecord
from storage.group_capacity import GroupCapacityStore

OrgRole = Literal["primary", "admin", "member"]
#: What a sub-admin may be allowed (P3). The primary admin has all of them.
Permission = Literal["members", "audit", "export", "search", "moderate", "admins"]
ALL_PERMISSIONS: frozenset[str] = frozenset(
    {"members", "audit", "export", "search", "moderate", "admins"}
)
RequestKind = Literal["invite", "apply", "member_invite"]
RequestStatus = Literal["pending_user", "pending_admin", "accepted", "declined", "cancelled"]


class Organisation(msgspec.Struct, frozen=True, kw_only=True):
    org_id: int
    name: str
    #: O5: what the organisation enables for management, shown before anyone joins.
    disclosure: str
    created_at: int
    created_by: int
    verified: bool = False
    verified_at: int | None = None
    #: O4: set when dissolution was confirmed; the organisation is gone for every path
    #: from then on, and its rows are being deleted by a resumable job.
    dissolving_at: int | None = None


class OrgMember(msgspec.Struct, frozen=True, kw_only=True):
    org_id: int
    user_id: int
    role: OrgRole
    permissions: frozenset[str] = frozenset()
    joined_at: int = 0
    #: When they left or were removed; None while a member.
    left_at: int | None = None
    #: O5: the disclosure text the member accepted when joining.
    disclosure_accepted: str = ""

    @property
    def active(self) -> bool:
        return self.left_at is None

    def may(self, permission: str) -> bool:
        if not self.active:
            return False
        return self.role == "primary" or permission in self.permissions


class JoinRequest(msgspec.Struct, frozen=True, kw_only=True):
    """P4: joining needs both sides. ``invite``: an admin invited, the user answers;
    ``apply``: the user applied, an admin answers; ``member_invite``: a member invited, an
    admin approves, then the user answers."""

    request_id: int
    org_id: int
    user_id: int
    kind: RequestKind
    inviter: int
    status: RequestStatus
    disclosure: str
    note: str = ""
    created_at: int = 0
    updated_at: int = 0


class OrgCopy(msgspec.Struct, frozen=True, kw_only=True):
    """The organisation's copy of one message a member produced (D4 decisions): only the
    member's own content, its time, and an opaque reference to the conversation. Nothing of
    other participants, and none of the conversation's sequence numbers."""

    copy_id: int
    org_id: int
    member: int
    conv_ref: str
    ts: int
    body: bytes | None
    hidden: bool = False
    recalled: bool = False
    #: The copy's idempotency key (``NewCopy.source``): for a copy of the organisation's own
    #: conversation it names that message (``org:<conv>:<seq>``), so an admin's recall can
    #: reach it (O1); admin replies never show it.
    source: str = ""


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """P3: an admin's act, which counts as the organisation's act."""

    audit_id: int
    org_id: int
    actor: int
    action: str
    target: str
    ts: int


class OrgSummary(msgspec.Struct, frozen=True, kw_only=True):
    members: int
    copies: int
    requests: int
    audit_entries: int


class NewCopy(msgspec.Struct, frozen=True, kw_only=True):
    member: int
    conv_ref: str
    ts: int
    body: bytes
    #: Where it came from (the message's stream position in its store): copying the same
    #: source twice stores one copy.
    source: str


class OrganisationStore(GroupCapacityStore, Protocol):
    # M2: the group-expansion package and expansions (storage/group_capacity.py)

    # organisations (P2)
    async def create_org(
        self, *, name: str, disclosure: str, creator: int, now: int
    ) -> Organisation:
        """A new organisation with the next id; the creator is its primary admin (P3)."""

    async def get_org(self, org_id: int) -> Organisation | None: ...

    async def set_verified(self, org_id: int, *, verified: bool, now: int) -> Organisation:
        """Verify (or unverify) an organisation. ``AlreadyExists`` if another verified
        organisation has the same name (P2 name protection). ``KeyError`` if none."""

    # members and admins (P3, P4)
    async def get_member(self, org_id: int, user_id: int) -> OrgMember | None:
        """The member's latest membership row, a departed one included."""

    async def list_members(self, org_id: int, *, after_user: int, limit: int) -> list[OrgMember]:
        """Current members with ``user_id > after_user``, ascending."""

    async def orgs_of(self, user_id: int) -> list[OrgMember]:
        """The user's current memberships, ascending by organisation id."""

    async def membership_spans(self, org_id: int, user_id: int) -> list[tuple[int, int | None]]:
        """Every (joined_at, left_at) span of the user in the organisation, oldest first."""

    async def add_member(
        self, org_id: int, user_id: int, *, role: OrgRole, disclosure: str, now: int
    ) -> OrgMember:
        """Admit a user (a new span if they were a member before). ``AlreadyExists`` if
        they are a current member."""

    async def remove_member(self, org_id: int, user_id: int, *, now: int) -> OrgMember:
        """End the user's current span. ``KeyError`` if they are not a current member."""

    async def set_role(
        self, org_id: int, user_id: int, *, role: OrgRole, permissions: frozenset[str]
    ) -> OrgMember:
        """Change a current member's role and permissions. ``KeyError`` if not a member."""

    # join requests (P4, O5)
    async def create_request(
        self,
        org_id: int,
        *,
        user_id: int,
        kind: RequestKind,
        inviter: int,
        status: RequestStatus,
        disclosure: str,
        note: str,
        now: int,
    ) -> JoinRequest: ...

    async def get_request(self, org_id: int, request_id: int) -> JoinRequest | None: ...

    async def set_request_status(
        self,
        org_id: int,
        request_id: int,
        *,
        expect: RequestStatus,
        status: RequestStatus,
        now: int,
    ) -> JoinRequest | None:
        """Compare-and-set the status; None if it was not ``expect`` (someone answered)."""

    async def list_requests(
        self, org_id: int, *, user_id: int | None = None, status: RequestStatus | None = None
    ) -> list[JoinRequest]:
        """The organisation's requests, optionally for one user or in one status, by id."""

    # copies (D4)
    async def add_copy(self, org_id: int, copy: NewCopy) -> tuple[OrgCopy, bool]:
        """Store a copy with the next copy id; (existing copy, True) if ``copy.source`` was
        copied before, writing nothing."""

    async def copies(
        self,
        org_id: int,
        *,
        member: int | None = None,
        conv_ref: str | None = None,
        from_ts: int | None = None,
        to_ts: int | None = None,
        after_copy: int = 0,
        limit: int,
        include_hidden: bool = False,
    ) -> list[OrgCopy]:
        """Copies with ``copy_id > after_copy`` matching every given filter (``from_ts <= ts
        < to_ts``), ascending by copy id. Hidden copies only with ``include_hidden``."""

    async def get_copy(self, org_id: int, copy_id: int) -> OrgCopy | None: ...

    async def set_copy_state(
        self, org_id: int, copy_id: int, *, hidden: bool | None = None, recalled: bool = False
    ) -> OrgCopy:
        """Hide/unhide a copy, or recall it (its body is erased for good). ``KeyError`` if
        there is no such copy."""

    async def copy_counts(self, org_id: int) -> dict[int, int]:
        """Visible (not hidden, not recalled) copies per member."""

    # the audit log (P3)
    async def append_audit(
        self, org_id: int, *, actor: int, action: str, target: str, now: int
    ) -> AuditEntry: ...

    async def audit_log(self, org_id: int, *, after: int, limit: int) -> list[AuditEntry]:
        """Entries with ``audit_id > after``, ascending."""

    async def member_ids(self, org_id: int, user_ids: Sequence[int]) -> set[int]:
        """Which of ``user_ids`` are current members."""

    # dissolution (O4)
    async def summary(self, org_id: int) -> OrgSummary:
        """What dissolving would delete: counts of each kind of row."""

    async def mark_dissolving(self, org_id: int, *, now: int) -> Organisation:
        """Record that dissolution was confirmed (idempotent: the first time is kept).
        ``KeyError`` if there is no such organisation."""

    async def dissolving(self) -> list[int]:
        """Organisations whose dissolution was confirmed and is not finished, by id."""

    async def delete_chunk(self, org_id: int, *, limit: int) -> int:
        """Delete up to ``limit`` of the organisation's rows (copies first, then requests,
        audit entries, members, login records, enterprise accounts, then the group-expansion
        package's ledger and expansions, M2) in one transaction;
        when none are left, delete the organisation itself. Returns how many rows went; 0
        means the organisation is gone."""

    # enterprise accounts (P5, O1, O3)
    async def create_account(
        self,
        org_id: int,
        *,
        account: str,
        user_id: int,
        password_hash: str,
        now: int,
        phone: str | None = None,
    ) -> EnterpriseAccount:
        """A new active, unverified account without controls, with the contact ``phone``
        given (validated by the caller). ``AlreadyExists`` if the organisation has an account
        of that name or the user already is an account."""

    async def get_account(self, org_id: int, account: str) -> EnterpriseAccount | None: ...

    async def account_of_user(self, user_id: int) -> EnterpriseAccount | None:
        """The enterprise account whose personal user row is ``user_id``, if any."""

    async def list_accounts(
        self, org_id: int, *, after_account: str = "", limit: int
    ) -> list[EnterpriseAccount]:
        """The organisation's enterprise accounts, whatever their status, with ``account >
        after_account``, ascending by account name (O4: dissolution ends each of them)."""

    async def set_account_status(
        self, org_id: int, user_id: int, *, status: AccountStatus
    ) -> EnterpriseAccount:
        """``KeyError`` if the organisation has no such account (as for the setters below)."""

    async def set_person_verified(
        self, org_id: int, user_id: int, *, verified: bool
    ) -> EnterpriseAccount: ...

    async def set_controls(
        self, org_id: int, user_id: int, *, controls: frozenset[str]
    ) -> EnterpriseAccount: ...

    async def set_account_phone(
        self, org_id: int, user_id: int, *, phone: str | None
    ) -> EnterpriseAccount:
        """Set (or with ``None`` clear) the account's contact phone (G1, P5). Not unique:
        several accounts may share one number, and it is never a login identifier."""

    async def record_login(
        self, org_id: int, user_id: int, *, ok: bool, reason: str, now: int
    ) -> LoginRecord: ...

    async def login_records(self, org_id: int, user_id: int, *, limit: int) -> list[LoginRecord]:
        """The account's latest login records, newest first."""
