"""The organisation store in ``organisations.db`` (D2): rows keyed by organisation."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.enterprise import AccountStatus, EnterpriseAccount, LoginRecord
from storage.errors import AlreadyExists
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
from storage.sqlite.database import Database
from storage.sqlite.group_capacity import SqliteGroupCapacity

_ORG = (
    "SELECT org_id, name, disclosure, created_at, created_by, verified, verified_at,"
    " dissolving_at FROM organisations"
)
_MEMBER = (
    "SELECT org_id, user_id, role, permissions, joined_at, left_at, disclosure_accepted"
    " FROM org_members"
)
_REQUEST = (
    "SELECT request_id, org_id, user_id, kind, inviter, status, disclosure, note, created_at,"
    " updated_at FROM join_requests"
)
_COPY = (
    "SELECT copy_id, org_id, member, conv_ref, ts, body, hidden, recalled, source FROM org_copies"
)
_ACCOUNT = (
    "SELECT org_id, account, user_id, password_hash, status, person_verified, controls,"
    " created_at, phone FROM enterprise_accounts"
)


def _org(row: Any) -> Organisation:
    return Organisation(
        org_id=row[0],
        name=row[1],
        disclosure=row[2],
        created_at=row[3],
        created_by=row[4],
        verified=bool(row[5]),
        verified_at=row[6],
        dissolving_at=row[7],
    )


def _member(row: Any) -> OrgMember:
    return OrgMember(
        org_id=row[0],
        user_id=row[1],
        role=row[2],
        permissions=frozenset(p for p in row[3].split(",") if p),
        joined_at=row[4],
        left_at=row[5],
        disclosure_accepted=row[6],
    )


def _request(row: Any) -> JoinRequest:
    return JoinRequest(
        request_id=row[0],
        org_id=row[1],
        user_id=row[2],
        kind=row[3],
        inviter=row[4],
        status=row[5],
        disclosure=row[6],
        note=row[7],
        created_at=row[8],
        updated_at=row[9],
    )


def _copy(row: Any) -> OrgCopy:
    return OrgCopy(
        copy_id=row[0],
        org_id=row[1],
        member=row[2],
        conv_ref=row[3],
        ts=row[4],
        body=row[5],
        hidden=bool(row[6]),
        recalled=bool(row[7]),
        source=row[8],
    )


def _account(row: Any) -> EnterpriseAccount:
    return EnterpriseAccount(
        org_id=row[0],
        account=row[1],
        user_id=row[2],
        password_hash=row[3],
        status=row[4],
        person_verified=bool(row[5]),
        controls=frozenset(c for c in row[6].split(",") if c),
        created_at=row[7],
        phone=row[8],
    )


def _latest_member(conn: sqlite3.Connection, org_id: int, user_id: int) -> OrgMember | None:
    row = conn.execute(
        f"{_MEMBER} WHERE org_id = ? AND user_id = ? ORDER BY span DESC LIMIT 1",
        (org_id, user_id),
    ).fetchone()
    return _member(row) if row else None


def _next_id(conn: sqlite3.Connection, table: str, column: str, org_id: int) -> int:
    row = conn.execute(f"SELECT MAX({column}) FROM {table} WHERE org_id = ?", (org_id,)).fetchone()
    return int(row[0] or 0) + 1


class SqliteOrganisationStore(SqliteGroupCapacity):  # M2 in storage/sqlite/group_capacity.py
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    async def create_org(
        self, *, name: str, disclosure: str, creator: int, now: int
    ) -> Organisation:
        def create_org(conn: sqlite3.Connection) -> Organisation:
            cursor = conn.execute(
                "INSERT INTO organisations (name, disclosure, created_at, created_by)"
                " VALUES (?, ?, ?, ?)",
                (name, disclosure, now, creator),
            )
            org_id = cursor.lastrowid
            assert org_id is not None
            conn.execute(
                "INSERT INTO org_members (org_id, user_id, span, role, joined_at,"
                " disclosure_accepted) VALUES (?, ?, 1, 'primary', ?, ?)",
                (org_id, creator, now, disclosure),
            )
            return Organisation(
                org_id=org_id, name=name, disclosure=disclosure, created_at=now, created_by=creator
            )

        return await self._writer.run("create_org", create_org)

    async def get_org(self, org_id: int) -> Organisation | None:
        def get_org(conn: sqlite3.Connection) -> Organisation | None:
            row = conn.execute(f"{_ORG} WHERE org_id = ?", (org_id,)).fetchone()
            return _org(row) if row else None

        return await self._readers.run("get_org", get_org)

    async def set_verified(self, org_id: int, *, verified: bool, now: int) -> Organisation:
        def set_verified(conn: sqlite3.Connection) -> Organisation:
            try:
                cursor = conn.execute(
                    "UPDATE organisations SET verified = ?, verified_at = ? WHERE org_id = ?",
                    (verified, now if verified else None, org_id),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists("a verified organisation has this name") from None
            if cursor.rowcount == 0:
                raise KeyError(f"no organisation {org_id}")
            return _org(conn.execute(f"{_ORG} WHERE org_id = ?", (org_id,)).fetchone())

        return await self._writer.run("set_verified", set_verified)

    async def get_member(self, org_id: int, user_id: int) -> OrgMember | None:
        return await self._readers.run(
            "get_org_member", lambda conn: _latest_member(conn, org_id, user_id)
        )

    async def list_members(self, org_id: int, *, after_user: int, limit: int) -> list[OrgMember]:
        def list_members(conn: sqlite3.Connection) -> list[OrgMember]:
            rows = conn.execute(
                f"{_MEMBER} WHERE org_id = ? AND left_at IS NULL AND user_id > ?"
                " ORDER BY user_id LIMIT ?",
                (org_id, after_user, max(limit, 0)),
            )
            return [_member(r) for r in rows]

        return await self._readers.run("list_org_members", list_members)

    async def orgs_of(self, user_id: int) -> list[OrgMember]:
        def orgs_of(conn: sqlite3.Connection) -> list[OrgMember]:
            rows = conn.execute(
                f"{_MEMBER} WHERE user_id = ? AND left_at IS NULL AND org_id NOT IN"
                " (SELECT org_id FROM organisations WHERE dissolving_at IS NOT NULL)"
                " ORDER BY org_id",
                (user_id,),
            )
            return [_member(r) for r in rows]

        return await self._readers.run("orgs_of", orgs_of)

    async def membership_spans(self, org_id: int, user_id: int) -> list[tuple[int, int | None]]:
        def spans(conn: sqlite3.Connection) -> list[tuple[int, int | None]]:
            rows = conn.execute(
                "SELECT joined_at, left_at FROM org_members WHERE org_id = ? AND user_id = ?"
                " ORDER BY span",
                (org_id, user_id),
            )
            return [(j, left) for j, left in rows]

        return await self._readers.run("membership_spans", spans)

    async def add_member(
        self, org_id: int, user_id: int, *, role: OrgRole, disclosure: str, now: int
    ) -> OrgMember:
        def add_member(conn: sqlite3.Connection) -> OrgMember:
            exists = conn.execute("SELECT 1 FROM organisations WHERE org_id = ?", (org_id,))
            if exists.fetchone() is None:
                raise KeyError(f"no organisation {org_id}")
            latest = _latest_member(conn, org_id, user_id)
            if latest is not None and latest.active:
                raise AlreadyExists(f"user {user_id} is a member")
            span = conn.execute(
                "SELECT COALESCE(MAX(span), 0) + 1 FROM org_members"
                " WHERE org_id = ? AND user_id = ?",
                (org_id, user_id),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO org_members (org_id, user_id, span, role, joined_at,"
                " disclosure_accepted) VALUES (?, ?, ?, ?, ?, ?)",
                (org_id, user_id, span, role, now, disclosure),
            )
            return OrgMember(
                org_id=org_id,
                user_id=user_id,
                role=role,
                joined_at=now,
                disclosure_accepted=disclosure,
            )

        return await self._writer.run("add_org_member", add_member)

    async def remove_member(self, org_id: int, user_id: int, *, now: int) -> OrgMember:
        def remove_member(conn: sqlite3.Connection) -> OrgMember:
            cursor = conn.execute(
                "UPDATE org_members SET left_at = ? WHERE org_id = ? AND user_id = ?"
                " AND left_at IS NULL",
                (now, org_id, user_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"user {user_id} is not a member")
            member = _latest_member(conn, org_id, user_id)
            assert member is not None
            return member

        return await self._writer.run("remove_org_member", remove_member)

    async def set_role(
        self, org_id: int, user_id: int, *, role: OrgRole, permissions: frozenset[str]
    ) -> OrgMember:
        def set_role(conn: sqlite3.Connection) -> OrgMember:
            cursor = conn.execute(
                "UPDATE org_members SET role = ?, permissions = ? WHERE org_id = ? AND user_id = ?"
                " AND left_at IS NULL",
                (role, ",".join(sorted(permissions)), org_id, user_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"user {user_id} is not a member")
            member = _latest_member(conn, org_id, user_id)
            assert member is not None
            return member

        return await self._writer.run("set_org_role", set_role)

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
        def create_request(conn: sqlite3.Connection) -> JoinRequest:
            request_id = _next_id(conn, "join_requests", "request_id", org_id)
            conn.execute(
                "INSERT INTO join_requests (org_id, request_id, user_id, kind, inviter, status,"
                " disclosure, note, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (org_id, request_id, user_id, kind, inviter, status, disclosure, note, now, now),
            )
            return JoinRequest(
                request_id=request_id,
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

        return await self._writer.run("create_join_request", create_request)

    async def get_request(self, org_id: int, request_id: int) -> JoinRequest | None:
        def get_request(conn: sqlite3.Connection) -> JoinRequest | None:
            row = conn.execute(
                f"{_REQUEST} WHERE org_id = ? AND request_id = ?", (org_id, request_id)
            ).fetchone()
            return _request(row) if row else None

        return await self._readers.run("get_join_request", get_request)

    async def set_request_status(
        self,
        org_id: int,
        request_id: int,
        *,
        expect: RequestStatus,
        status: RequestStatus,
        now: int,
    ) -> JoinRequest | None:
        def set_status(conn: sqlite3.Connection) -> JoinRequest | None:
            cursor = conn.execute(
                "UPDATE join_requests SET status = ?, updated_at = ? WHERE org_id = ?"
                " AND request_id = ? AND status = ?",
                (status, now, org_id, request_id, expect),
            )
            if cursor.rowcount == 0:
                return None
            row = conn.execute(
                f"{_REQUEST} WHERE org_id = ? AND request_id = ?", (org_id, request_id)
            ).fetchone()
            return _request(row)

        return await self._writer.run("set_join_request_status", set_status)

    async def list_requests(
        self, org_id: int, *, user_id: int | None = None, status: RequestStatus | None = None
    ) -> list[JoinRequest]:
        def list_requests(conn: sqlite3.Connection) -> list[JoinRequest]:
            rows = conn.execute(
                f"{_REQUEST} WHERE org_id = ? AND (?2 IS NULL OR user_id = ?2)"
                " AND (?3 IS NULL OR status = ?3) ORDER BY request_id",
                (org_id, user_id, status),
            )
            return [_request(r) for r in rows]

        return await self._readers.run("list_join_requests", list_requests)

    async def add_copy(self, org_id: int, copy: NewCopy) -> tuple[OrgCopy, bool]:
        def add_copy(conn: sqlite3.Connection) -> tuple[OrgCopy, bool]:
            row = conn.execute(
                f"{_COPY} WHERE org_id = ? AND source = ?", (org_id, copy.source)
            ).fetchone()
            if row is not None:
                return _copy(row), True
            copy_id = _next_id(conn, "org_copies", "copy_id", org_id)
            conn.execute(
                "INSERT INTO org_copies (org_id, copy_id, member, conv_ref, ts, body, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (org_id, copy_id, copy.member, copy.conv_ref, copy.ts, copy.body, copy.source),
            )
            record = OrgCopy(
                copy_id=copy_id,
                org_id=org_id,
                member=copy.member,
                conv_ref=copy.conv_ref,
                ts=copy.ts,
                body=copy.body,
                source=copy.source,
            )
            return record, False

        return await self._writer.run("add_org_copy", add_copy)

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
        def copies(conn: sqlite3.Connection) -> list[OrgCopy]:
            rows = conn.execute(
                f"{_COPY} WHERE org_id = ?1 AND copy_id > ?2 AND (?3 IS NULL OR member = ?3)"
                " AND (?4 IS NULL OR conv_ref = ?4) AND (?5 IS NULL OR ts >= ?5)"
                " AND (?6 IS NULL OR ts < ?6) AND (?7 OR hidden = 0)"
                " ORDER BY copy_id LIMIT ?8",
                (
                    org_id,
                    after_copy,
                    member,
                    conv_ref,
                    from_ts,
                    to_ts,
                    include_hidden,
                    max(limit, 0),
                ),
            )
            return [_copy(r) for r in rows]

        return await self._readers.run("org_copies", copies)

    async def get_copy(self, org_id: int, copy_id: int) -> OrgCopy | None:
        def get_copy(conn: sqlite3.Connection) -> OrgCopy | None:
            row = conn.execute(
                f"{_COPY} WHERE org_id = ? AND copy_id = ?", (org_id, copy_id)
            ).fetchone()
            return _copy(row) if row else None

        return await self._readers.run("get_org_copy", get_copy)

    async def set_copy_state(
        self, org_id: int, copy_id: int, *, hidden: bool | None = None, recalled: bool = False
    ) -> OrgCopy:
        def set_state(conn: sqlite3.Connection) -> OrgCopy:
            if hidden is not None:
                conn.execute(
                    "UPDATE org_copies SET hidden = ? WHERE org_id = ? AND copy_id = ?",
                    (hidden, org_id, copy_id),
                )
            if recalled:
                conn.execute(
                    "UPDATE org_copies SET recalled = 1, body = NULL WHERE org_id = ?"
                    " AND copy_id = ?",
                    (org_id, copy_id),
                )
            row = conn.execute(
                f"{_COPY} WHERE org_id = ? AND copy_id = ?", (org_id, copy_id)
            ).fetchone()
            if row is None:
                raise KeyError(f"no copy {copy_id}")
            return _copy(row)

        return await self._writer.run("set_org_copy_state", set_state)

    async def copy_counts(self, org_id: int) -> dict[int, int]:
        def counts(conn: sqlite3.Connection) -> dict[int, int]:
            rows = conn.execute(
                "SELECT member, COUNT(*) FROM org_copies WHERE org_id = ? AND hidden = 0"
                " AND recalled = 0 GROUP BY member ORDER BY member",
                (org_id,),
            )
            return {m: c for m, c in rows}

        return await self._readers.run("org_copy_counts", counts)

    async def append_audit(
        self, org_id: int, *, actor: int, action: str, target: str, now: int
    ) -> AuditEntry:
        def append_audit(conn: sqlite3.Connection) -> AuditEntry:
            audit_id = _next_id(conn, "org_audit", "audit_id", org_id)
            conn.execute(
                "INSERT INTO org_audit (org_id, audit_id, actor, action, target, ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (org_id, audit_id, actor, action, target, now),
            )
            return AuditEntry(
                audit_id=audit_id, org_id=org_id, actor=actor, action=action, target=target, ts=now
            )

        return await self._writer.run("append_org_audit", append_audit)

    async def audit_log(self, org_id: int, *, after: int, limit: int) -> list[AuditEntry]:
        def audit_log(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT audit_id, org_id, actor, action, target, ts FROM org_audit"
                " WHERE org_id = ? AND audit_id > ? ORDER BY audit_id LIMIT ?",
                (org_id, after, max(limit, 0)),
            )
            return [
                AuditEntry(audit_id=a, org_id=o, actor=ac, action=act, target=t, ts=ts)
                for a, o, ac, act, t, ts in rows
            ]

        return await self._readers.run("org_audit_log", audit_log)

    async def member_ids(self, org_id: int, user_ids: Sequence[int]) -> set[int]:
        wanted = list(user_ids)

        def member_ids(conn: sqlite3.Connection) -> set[int]:
            found: set[int] = set()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT user_id FROM org_members WHERE org_id = ? AND left_at IS NULL"
                    f" AND user_id IN ({marks})",
                    (org_id, *chunk),
                )
                found.update(r[0] for r in rows)
            return found

        return await self._readers.run("org_member_ids", member_ids)

    async def summary(self, org_id: int) -> OrgSummary:
        def summary(conn: sqlite3.Connection) -> OrgSummary:
            def count(sql: str) -> int:
                return int(conn.execute(sql, (org_id,)).fetchone()[0])

            return OrgSummary(
                members=count(
                    "SELECT COUNT(*) FROM org_members WHERE org_id = ? AND left_at IS NULL"
                ),
                copies=count("SELECT COUNT(*) FROM org_copies WHERE org_id = ?"),
                requests=count("SELECT COUNT(*) FROM join_requests WHERE org_id = ?"),
                audit_entries=count("SELECT COUNT(*) FROM org_audit WHERE org_id = ?"),
            )

        return await self._readers.run("org_summary", summary)

    async def mark_dissolving(self, org_id: int, *, now: int) -> Organisation:
        def mark(conn: sqlite3.Connection) -> Organisation:
            conn.execute(
                "UPDATE organisations SET dissolving_at = ? WHERE org_id = ?"
                " AND dissolving_at IS NULL",
                (now, org_id),
            )
            row = conn.execute(f"{_ORG} WHERE org_id = ?", (org_id,)).fetchone()
            if row is None:
                raise KeyError(f"no organisation {org_id}")
            return _org(row)

        return await self._writer.run("mark_org_dissolving", mark)

    async def dissolving(self) -> list[int]:
        def dissolving(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT org_id FROM organisations WHERE dissolving_at IS NOT NULL ORDER BY org_id"
            )
            return [r[0] for r in rows]

        return await self._readers.run("dissolving_orgs", dissolving)

    async def delete_chunk(self, org_id: int, *, limit: int) -> int:
        def delete_chunk(conn: sqlite3.Connection) -> int:
            # Rows keyed by org_id first: each chunk is a short range delete that holds the
            # writer briefly, so one large organisation never stalls the others.
            deleted = 0
            for table, key in (
                ("org_copies", "copy_id"),
                ("join_requests", "request_id"),
                ("org_audit", "audit_id"),
                ("org_members", "user_id"),
                ("enterprise_logins", "login_id"),
                ("enterprise_accounts", "account"),
                ("group_package_ledger", "entry_id"),  # M2
                ("group_expansions", "expansion_id"),
            ):
                if deleted >= limit:
                    break
                cursor = conn.execute(
                    f"DELETE FROM {table} WHERE org_id = ?1 AND {key} IN (SELECT {key}"
                    f" FROM {table} WHERE org_id = ?1 ORDER BY {key} LIMIT ?2)",
                    (org_id, limit - deleted),
                )
                deleted += cursor.rowcount
            if deleted == 0:
                conn.execute("DELETE FROM organisations WHERE org_id = ?", (org_id,))
            return deleted

        return await self._writer.run("delete_org_chunk", delete_chunk)

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
        def create_account(conn: sqlite3.Connection) -> EnterpriseAccount:
            if conn.execute("SELECT 1 FROM organisations WHERE org_id = ?", (org_id,)).fetchone():
                try:
                    conn.execute(
                        "INSERT INTO enterprise_accounts (org_id, account, user_id,"
                        " password_hash, created_at, phone) VALUES (?, ?, ?, ?, ?, ?)",
                        (org_id, account, user_id, password_hash, now, phone),
                    )
                except sqlite3.IntegrityError:
                    raise AlreadyExists("the account name or the user is taken") from None
                return EnterpriseAccount(
                    org_id=org_id,
                    account=account,
                    user_id=user_id,
                    password_hash=password_hash,
                    created_at=now,
                    phone=phone,
                )
            raise KeyError(f"no organisation {org_id}")

        return await self._writer.run("create_enterprise_account", create_account)

    async def get_account(self, org_id: int, account: str) -> EnterpriseAccount | None:
        def get_account(conn: sqlite3.Connection) -> EnterpriseAccount | None:
            row = conn.execute(
                f"{_ACCOUNT} WHERE org_id = ? AND account = ?", (org_id, account)
            ).fetchone()
            return _account(row) if row else None

        return await self._readers.run("get_enterprise_account", get_account)

    async def account_of_user(self, user_id: int) -> EnterpriseAccount | None:
        def account_of_user(conn: sqlite3.Connection) -> EnterpriseAccount | None:
            row = conn.execute(f"{_ACCOUNT} WHERE user_id = ?", (user_id,)).fetchone()
            return _account(row) if row else None

        return await self._readers.run("enterprise_account_of_user", account_of_user)

    async def list_accounts(
        self, org_id: int, *, after_account: str = "", limit: int
    ) -> list[EnterpriseAccount]:
        def list_accounts(conn: sqlite3.Connection) -> list[EnterpriseAccount]:
            rows = conn.execute(
                f"{_ACCOUNT} WHERE org_id = ? AND account > ? ORDER BY account LIMIT ?",
                (org_id, after_account, max(limit, 0)),
            )
            return [_account(row) for row in rows]

        return await self._readers.run("list_enterprise_accounts", list_accounts)

    async def _update_account(
        self, name: str, org_id: int, user_id: int, column: str, value: object
    ) -> EnterpriseAccount:
        def update(conn: sqlite3.Connection) -> EnterpriseAccount:
            cursor = conn.execute(
                f"UPDATE enterprise_accounts SET {column} = ? WHERE org_id = ? AND user_id = ?",
                (value, org_id, user_id),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no enterprise account {user_id} in organisation {org_id}")
            row = conn.execute(f"{_ACCOUNT} WHERE user_id = ?", (user_id,)).fetchone()
            return _account(row)

        return await self._writer.run(name, update)

    async def set_account_status(
        self, org_id: int, user_id: int, *, status: AccountStatus
    ) -> EnterpriseAccount:
        return await self._update_account("set_account_status", org_id, user_id, "status", status)

    async def set_person_verified(
        self, org_id: int, user_id: int, *, verified: bool
    ) -> EnterpriseAccount:
        return await self._update_account(
            "set_person_verified", org_id, user_id, "person_verified", int(verified)
        )

    async def set_controls(
        self, org_id: int, user_id: int, *, controls: frozenset[str]
    ) -> EnterpriseAccount:
        text = ",".join(sorted(controls))
        return await self._update_account("set_account_controls", org_id, user_id, "controls", text)

    async def set_account_phone(
        self, org_id: int, user_id: int, *, phone: str | None
    ) -> EnterpriseAccount:
        return await self._update_account("set_account_phone", org_id, user_id, "phone", phone)

    async def record_login(
        self, org_id: int, user_id: int, *, ok: bool, reason: str, now: int
    ) -> LoginRecord:
        def record_login(conn: sqlite3.Connection) -> LoginRecord:
            found = conn.execute(
                "SELECT 1 FROM enterprise_accounts WHERE org_id = ? AND user_id = ?",
                (org_id, user_id),
            ).fetchone()
            if found is None:
                raise KeyError(f"no enterprise account {user_id} in organisation {org_id}")
            login_id = _next_id(conn, "enterprise_logins", "login_id", org_id)
            conn.execute(
                "INSERT INTO enterprise_logins (org_id, login_id, user_id, ts, ok, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (org_id, login_id, user_id, now, int(ok), reason),
            )
            return LoginRecord(org_id=org_id, user_id=user_id, ts=now, ok=ok, reason=reason)

        return await self._writer.run("record_enterprise_login", record_login)

    async def login_records(self, org_id: int, user_id: int, *, limit: int) -> list[LoginRecord]:
        def login_records(conn: sqlite3.Connection) -> list[LoginRecord]:
            rows = conn.execute(
                "SELECT ts, ok, reason FROM enterprise_logins WHERE org_id = ? AND user_id = ?"
                " ORDER BY login_id DESC LIMIT ?",
                (org_id, user_id, max(limit, 0)),
            )
            return [
                LoginRecord(org_id=org_id, user_id=user_id, ts=ts, ok=bool(ok), reason=reason)
                for ts, ok, reason in rows
            ]

        return await self._readers.run("enterprise_login_records", login_records)
