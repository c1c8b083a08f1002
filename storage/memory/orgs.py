"""The in-memory organisation store (reference implementation of ``storage.orgs``)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from storage.enterprise import AccountStatus, EnterpriseAccount, LoginRecord
from storage.errors import AlreadyExists
from storage.group_capacity import GroupExpansion
from storage.memory.group_capacity import MemoryGroupCapacity
from storage.orgs import (
    AuditEntry,
    JoinRequest,
    NewCopy,
    Organisation,
    OrgCopy,
    OrgMember,
    OrgRole,
    OrgSummary,
    RequestKind,
    RequestStatus,
)


class _Org:
    def __init__(self, org: Organisation) -> None:
        self.org = org
        self.members: dict[int, OrgMember] = {}
        self.spans: dict[int, list[tuple[int, int | None]]] = {}
        self.requests: dict[int, JoinRequest] = {}
        self.copies: dict[int, OrgCopy] = {}
        self.sources: dict[str, int] = {}
        self.audit: list[AuditEntry] = []
        #: P5: enterprise accounts by user id, and their login records, oldest first.
        self.accounts: dict[int, EnterpriseAccount] = {}
        self.logins: list[LoginRecord] = []
        #: M2: the group-expansion package's ledger, (sender, client id) -> (fingerprint,
        #: kind, units) in order, and the expansions it paid for by (conv id, member limit).
        self.group_ledger: dict[tuple[int, str], tuple[bytes, str, int]] = {}
        self.group_expansions: dict[tuple[str, int], GroupExpansion] = {}


class MemoryOrganisationStore(MemoryGroupCapacity):  # M2: storage/memory/group_capacity.py
    def __init__(self) -> None:
        self._orgs: dict[int, _Org] = {}
        #: Ids are never given out twice (as SQLite's AUTOINCREMENT): a dissolved
        #: organisation's id must not name a new one (O4, D6), nor collide with a live one.
        self._last_org_id = 0

    async def create_org(
        self, *, name: str, disclosure: str, creator: int, now: int
    ) -> Organisation:
        self._last_org_id += 1
        org = Organisation(
            org_id=self._last_org_id,
            name=name,
            disclosure=disclosure,
            created_at=now,
            created_by=creator,
        )
        state = self._orgs[org.org_id] = _Org(org)
        state.members[creator] = OrgMember(
            org_id=org.org_id,
            user_id=creator,
            role="primary",
            joined_at=now,
            disclosure_accepted=disclosure,
        )
        state.spans[creator] = [(now, None)]
        return org

    async def get_org(self, org_id: int) -> Organisation | None:
        state = self._orgs.get(org_id)
        return state.org if state else None

    async def set_verified(self, org_id: int, *, verified: bool, now: int) -> Organisation:
        state = self._org(org_id)
        if verified:
            for other in self._orgs.values():
                if (
                    other.org.org_id != org_id
                    and other.org.verified
                    and other.org.name == state.org.name
                ):
                    raise AlreadyExists(f"a verified organisation is named {state.org.name!r}")
        state.org = msgspec.structs.replace(
            state.org, verified=verified, verified_at=now if verified else None
        )
        return state.org

    async def get_member(self, org_id: int, user_id: int) -> OrgMember | None:
        state = self._orgs.get(org_id)
        return state.members.get(user_id) if state else None

    async def list_members(self, org_id: int, *, after_user: int, limit: int) -> list[OrgMember]:
        state = self._org(org_id)
        current = sorted(
            (m for m in state.members.values() if m.active and m.user_id > after_user),
            key=lambda m: m.user_id,
        )
        return current[:limit]

    async def orgs_of(self, user_id: int) -> list[OrgMember]:
        return [
            state.members[user_id]
            for org_id, state in sorted(self._orgs.items())
            if user_id in state.members
            and state.members[user_id].active
            and state.org.dissolving_at is None
        ]

    async def membership_spans(self, org_id: int, user_id: int) -> list[tuple[int, int | None]]:
        state = self._orgs.get(org_id)
        return list(state.spans.get(user_id, [])) if state else []

    async def add_member(
        self, org_id: int, user_id: int, *, role: OrgRole, disclosure: str, now: int
    ) -> OrgMember:
        state = self._org(org_id)
        existing = state.members.get(user_id)
        if existing is not None and existing.active:
            raise AlreadyExists(f"user {user_id} is a member")
        member = OrgMember(
            org_id=org_id, user_id=user_id, role=role, joined_at=now, disclosure_accepted=disclosure
        )
        state.members[user_id] = member
        state.spans.setdefault(user_id, []).append((now, None))
        return member

    async def remove_member(self, org_id: int, user_id: int, *, now: int) -> OrgMember:
        state = self._org(org_id)
        member = state.members.get(user_id)
        if member is None or not member.active:
            raise KeyError(f"user {user_id} is not a member")
        member = msgspec.structs.replace(member, left_at=now)
        state.members[user_id] = member
        joined, _ = state.spans[user_id][-1]
        state.spans[user_id][-1] = (joined, now)
        return member

    async def set_role(
        self, org_id: int, user_id: int, *, role: OrgRole, permissions: frozenset[str]
    ) -> OrgMember:
        state = self._org(org_id)
        member = state.members.get(user_id)
        if member is None or not member.active:
            raise KeyError(f"user {user_id} is not a member")
        member = msgspec.structs.replace(member, role=role, permissions=frozenset(permissions))
        state.members[user_id] = member
        return member

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
    ) -> JoinRequest:
        state = self._org(org_id)
        request = JoinRequest(
            request_id=len(state.requests) + 1,
            org_id=org_id,
            user_id=user_id,
            kind=kind,
            inviter=inviter,
            status=status,
            disclosure=disclosure,
            note=note,
            created_at=now,
            updated_at=now,
        )
        state.requests[request.request_id] = request
        return request

    async def get_request(self, org_id: int, request_id: int) -> JoinRequest | None:
        state = self._orgs.get(org_id)
        return state.requests.get(request_id) if state else None

    async def set_request_status(
        self,
        org_id: int,
        request_id: int,
        *,
        expect: RequestStatus,
        status: RequestStatus,
        now: int,
    ) -> JoinRequest | None:
        state = self._org(org_id)
        request = state.requests.get(request_id)
        if request is None or request.status != expect:
            return None
        request = msgspec.structs.replace(request, status=status, updated_at=now)
        state.requests[request_id] = request
        return request

    async def list_requests(
        self, org_id: int, *, user_id: int | None = None, status: RequestStatus | None = None
    ) -> list[JoinRequest]:
        state = self._org(org_id)
        return [
            r
            for _, r in sorted(state.requests.items())
            if (user_id is None or r.user_id == user_id) and (status is None or r.status == status)
        ]

    async def add_copy(self, org_id: int, copy: NewCopy) -> tuple[OrgCopy, bool]:
        state = self._org(org_id)
        known = state.sources.get(copy.source)
        if known is not None:
            return state.copies[known], True
        record = OrgCopy(
            copy_id=len(state.copies) + 1,
            org_id=org_id,
            member=copy.member,
            conv_ref=copy.conv_ref,
            ts=copy.ts,
            body=copy.body,
            source=copy.source,
        )
        state.copies[record.copy_id] = record
        state.sources[copy.source] = record.copy_id
        return record, False

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
        state = self._org(org_id)
        out = []
        for copy_id in sorted(state.copies):
            copy = state.copies[copy_id]
            if copy_id <= after_copy or (copy.hidden and not include_hidden):
                continue
            if member is not None and copy.member != member:
                continue
            if conv_ref is not None and copy.conv_ref != conv_ref:
                continue
            if from_ts is not None and copy.ts < from_ts:
                continue
            if to_ts is not None and copy.ts >= to_ts:
                continue
            out.append(copy)
            if len(out) == limit:
                break
        return out

    async def get_copy(self, org_id: int, copy_id: int) -> OrgCopy | None:
        state = self._orgs.get(org_id)
        return state.copies.get(copy_id) if state else None

    async def set_copy_state(
        self, org_id: int, copy_id: int, *, hidden: bool | None = None, recalled: bool = False
    ) -> OrgCopy:
        state = self._org(org_id)
        copy = state.copies[copy_id]
        if hidden is not None:
            copy = msgspec.structs.replace(copy, hidden=hidden)
        if recalled:
            copy = msgspec.structs.replace(copy, recalled=True, body=None)
        state.copies[copy_id] = copy
        return copy

    async def copy_counts(self, org_id: int) -> dict[int, int]:
        counts: dict[int, int] = {}
        for copy in self._org(org_id).copies.values():
            if not copy.hidden and not copy.recalled:
                counts[copy.member] = counts.get(copy.member, 0) + 1
        return counts

    async def append_audit(
        self, org_id: int, *, actor: int, action: str, target: str, now: int
    ) -> AuditEntry:
        state = self._org(org_id)
        entry = AuditEntry(
            audit_id=len(state.audit) + 1,
            org_id=org_id,
            actor=actor,
            action=action,
            target=target,
            ts=now,
        )
        state.audit.append(entry)
        return entry

    async def audit_log(self, org_id: int, *, after: int, limit: int) -> list[AuditEntry]:
        return [e for e in self._org(org_id).audit if e.audit_id > after][:limit]

    async def summary(self, org_id: int) -> OrgSummary:
        state = self._org(org_id)
        return OrgSummary(
            members=sum(1 for m in state.members.values() if m.active),
            copies=len(state.copies),
            requests=len(state.requests),
            audit_entries=len(state.audit),
        )

    async def mark_dissolving(self, org_id: int, *, now: int) -> Organisation:
        state = self._org(org_id)
        if state.org.dissolving_at is None:
            state.org = msgspec.structs.replace(state.org, dissolving_at=now)
        return state.org

    async def dissolving(self) -> list[int]:
        return sorted(o for o, s in self._orgs.items() if s.org.dissolving_at is not None)

    async def delete_chunk(self, org_id: int, *, limit: int) -> int:
        state = self._orgs.get(org_id)
        if state is None:
            return 0
        deleted = 0
        for table in (state.copies, state.requests):
            while table and deleted < limit:
                del table[next(iter(table))]
                deleted += 1
        while state.audit and deleted < limit:
            state.audit.pop()
            deleted += 1
        while state.members and deleted < limit:
            user_id = next(iter(state.members))
            del state.members[user_id]
            state.spans.pop(user_id, None)
            deleted += 1
        while state.logins and deleted < limit:
            state.logins.pop()
            deleted += 1
        while state.accounts and deleted < limit:
            del state.accounts[next(iter(state.accounts))]
            deleted += 1
        while state.group_ledger and deleted < limit:  # M2
            del state.group_ledger[next(iter(state.group_ledger))]
            deleted += 1
        while state.group_expansions and deleted < limit:
            del state.group_expansions[next(iter(state.group_expansions))]
            deleted += 1
        if deleted == 0:
            del self._orgs[org_id]
            state.sources.clear()
        return deleted

    async def member_ids(self, org_id: int, user_ids: Sequence[int]) -> set[int]:
        state = self._org(org_id)
        return {u for u in user_ids if u in state.members and state.members[u].active}

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
        state = self._org(org_id)
        if any(a.account == account for a in state.accounts.values()):
            raise AlreadyExists(f"the organisation has an account named {account!r}")
        if await self.account_of_user(user_id) is not None:
            raise AlreadyExists(f"user {user_id} already is an enterprise account")
        created = EnterpriseAccount(
            org_id=org_id,
            account=account,
            user_id=user_id,
            password_hash=password_hash,
            created_at=now,
            phone=phone,
        )
        state.accounts[user_id] = created
        return created

    async def get_account(self, org_id: int, account: str) -> EnterpriseAccount | None:
        state = self._orgs.get(org_id)
        if state is None:
            return None
        return next((a for a in state.accounts.values() if a.account == account), None)

    async def account_of_user(self, user_id: int) -> EnterpriseAccount | None:
        for state in self._orgs.values():
            if user_id in state.accounts:
                return state.accounts[user_id]
        return None

    async def list_accounts(
        self, org_id: int, *, after_account: str = "", limit: int
    ) -> list[EnterpriseAccount]:
        state = self._orgs.get(org_id)
        if state is None:
            return []
        found = sorted(
            (a for a in state.accounts.values() if a.account > after_account),
            key=lambda a: a.account,
        )
        return found[: max(limit, 0)]

    def _replace_account(self, org_id: int, user_id: int, **changes: object) -> EnterpriseAccount:
        state = self._org(org_id)
        if user_id not in state.accounts:
            raise KeyError(f"no enterprise account {user_id} in organisation {org_id}")
        updated = msgspec.structs.replace(state.accounts[user_id], **changes)
        state.accounts[user_id] = updated
        return updated

    async def set_account_status(
        self, org_id: int, user_id: int, *, status: AccountStatus
    ) -> EnterpriseAccount:
        return self._replace_account(org_id, user_id, status=status)

    async def set_person_verified(
        self, org_id: int, user_id: int, *, verified: bool
    ) -> EnterpriseAccount:
        return self._replace_account(org_id, user_id, person_verified=verified)

    async def set_controls(
        self, org_id: int, user_id: int, *, controls: frozenset[str]
    ) -> EnterpriseAccount:
        return self._replace_account(org_id, user_id, controls=frozenset(controls))

    async def set_account_phone(
        self, org_id: int, user_id: int, *, phone: str | None
    ) -> EnterpriseAccount:
        return self._replace_account(org_id, user_id, phone=phone)

    async def record_login(
        self, org_id: int, user_id: int, *, ok: bool, reason: str, now: int
    ) -> LoginRecord:
        state = self._org(org_id)
        if user_id not in state.accounts:
            raise KeyError(f"no enterprise account {user_id} in organisation {org_id}")
        record = LoginRecord(org_id=org_id, user_id=user_id, ts=now, ok=ok, reason=reason)
        state.logins.append(record)
        return record

    async def login_records(self, org_id: int, user_id: int, *, limit: int) -> list[LoginRecord]:
        state = self._orgs.get(org_id)
        if state is None:
            return []
        mine = [r for r in state.logins if r.user_id == user_id]
        return mine[::-1][: max(limit, 0)]
