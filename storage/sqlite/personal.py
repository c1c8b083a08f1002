"""The SQLite personal store (D1), in ``personal.db``: implements ``PersonalStore``.

Every method is one named transaction: writes through the database's writer thread (group
commit, durable before they return), reads on the reader pool. Statements are constant
strings, so the connection's statement cache keeps them prepared.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.errors import AlreadyExists, IdempotencyConflict
from storage.records import (
    ContactRow,
    ContactWrite,
    Device,
    IdempotencyKey,
    LoginCodeOutcome,
    PersonalChange,
    RefreshSession,
    Settings,
    User,
)
from storage.sqlite.database import Database

_USER = (
    "SELECT user_id, phone, display_name, created_at, token_generation, suspended,"
    " deleted_at FROM users"
)
_DEVICE = (
    "SELECT device_id, user_id, name, created_at, last_seen_at, acked_conversations,"
    " acked_personal, acked_organisation FROM devices"
)
_SESSION = (
    "SELECT session_id, user_id, device_id, secret_mac, generation, expires_at"
    " FROM refresh_sessions"
)
_CONTACT = "SELECT owner, peer, state, note, updated_at FROM contacts"
_CHANGE = "SELECT pstream, user_id, body FROM personal_stream"


class SqlitePersonalStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    # users

    async def create_user(self, *, phone: str, display_name: str, now: int) -> User:
        def create_user(conn: sqlite3.Connection) -> User:
            if conn.execute("SELECT 1 FROM users WHERE phone = ?", (phone,)).fetchone():
                raise AlreadyExists("phone number already registered")
            cursor = conn.execute(
                "INSERT INTO users (phone, display_name, created_at) VALUES (?, ?, ?)",
                (phone, display_name, now),
            )
            assert cursor.lastrowid is not None
            return User(
                user_id=cursor.lastrowid, phone=phone, display_name=display_name, created_at=now
            )

        return await self._writer.run("create_user", create_user)

    async def get_user(self, user_id: int) -> User | None:
        def get_user(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"{_USER} WHERE user_id = ?", (user_id,)).fetchone()
            return None if row is None else _user(row)

        return await self._readers.run_inline("get_user", get_user)

    async def get_user_by_phone(self, phone: str) -> User | None:
        def get_user_by_phone(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"{_USER} WHERE phone = ?", (phone,)).fetchone()
            return None if row is None else _user(row)

        return await self._readers.run("get_user_by_phone", get_user_by_phone)

    async def get_users(self, user_ids: Sequence[int]) -> list[User]:
        wanted = sorted(set(user_ids))

        def get_users(conn: sqlite3.Connection) -> list[User]:
            found: list[User] = []
            for user_id in wanted:
                row = conn.execute(f"{_USER} WHERE user_id = ?", (user_id,)).fetchone()
                if row is not None:
                    found.append(_user(row))
            return found

        return await self._readers.run("get_users", get_users)

    async def set_display_name(self, user_id: int, display_name: str) -> None:
        def set_display_name(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE users SET display_name = ? WHERE user_id = ?", (display_name, user_id)
            )

        await self._writer.run("set_display_name", set_display_name)

    async def bump_token_generation(self, user_id: int) -> int:
        """``KeyError`` if the user does not exist."""

        def bump_token_generation(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "UPDATE users SET token_generation = token_generation + 1 WHERE user_id = ?"
                " RETURNING token_generation",
                (user_id,),
            ).fetchall()
            if not rows:
                raise KeyError(user_id)
            # A2: logout_all also ends every refresh session, so no old refresh token rotates.
            conn.execute("DELETE FROM refresh_sessions WHERE user_id = ?", (user_id,))
            return int(rows[0][0])

        return await self._writer.run("bump_token_generation", bump_token_generation)

    async def set_suspended(self, user_id: int, suspended: bool) -> bool:
        def set_suspended(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE users SET suspended = ? WHERE user_id = ?", (int(suspended), user_id)
            )
            return cursor.rowcount == 1

        return await self._writer.run("set_suspended", set_suspended)

    # devices

    async def register_device(self, *, user_id: int, name: str, now: int) -> Device:
        def register_device(conn: sqlite3.Connection) -> Device:
            cursor = conn.execute(
                "INSERT INTO devices (user_id, name, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
                (user_id, name, now, now),
            )
            assert cursor.lastrowid is not None
            return Device(
                device_id=cursor.lastrowid,
                user_id=user_id,
                name=name,
                created_at=now,
                last_seen_at=now,
            )

        return await self._writer.run("register_device", register_device)

    async def get_device(self, device_id: int) -> Device | None:
        def get_device(conn: sqlite3.Connection) -> Device | None:
            row = conn.execute(f"{_DEVICE} WHERE device_id = ?", (device_id,)).fetchone()
            return None if row is None else _device(row)

        return await self._readers.run_inline("get_device", get_device)

    async def list_devices(self, user_id: int) -> list[Device]:
        def list_devices(conn: sqlite3.Connection) -> list[Device]:
            rows = conn.execute(f"{_DEVICE} WHERE user_id = ? ORDER BY device_id", (user_id,))
            return [_device(row) for row in rows]

        return await self._readers.run_inline("list_devices", list_devices)

    async def touch_device(self, device_id: int, *, now: int) -> None:
        def touch_device(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE devices SET last_seen_at = ? WHERE device_id = ?", (now, device_id)
            )

        await self._writer.run("touch_device", touch_device)

    async def touch_devices(self, seen: Sequence[tuple[int, int]]) -> None:
        rows = [(at, device_id) for device_id, at in seen]

        def touch_devices(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE devices SET last_seen_at = max(last_seen_at, ?) WHERE device_id = ?",
                rows,
            )

        if rows:
            await self._writer.run("touch_devices", touch_devices)

    async def ack_device(
        self, device_id: int, *, conversations: int, personal: int, organisation: int = 0
    ) -> None:
        def ack_device(conn: sqlite3.Connection) -> None:
            # Positions never move backwards.
            conn.execute(
                "UPDATE devices SET acked_conversations = max(acked_conversations, ?),"
                " acked_personal = max(acked_personal, ?),"
                " acked_organisation = max(acked_organisation, ?) WHERE device_id = ?",
                (conversations, personal, organisation, device_id),
            )

        await self._writer.run("ack_device", ack_device)

    # refresh sessions

    async def put_refresh_session(self, session: RefreshSession) -> None:
        def put_refresh_session(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO refresh_sessions"
                " (session_id, user_id, device_id, secret_mac, generation, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    session.user_id,
                    session.device_id,
                    session.secret_mac,
                    session.generation,
                    session.expires_at,
                ),
            )

        await self._writer.run("put_refresh_session", put_refresh_session)

    async def get_refresh_session(self, session_id: str) -> RefreshSession | None:
        def get_refresh_session(conn: sqlite3.Connection) -> RefreshSession | None:
            row = conn.execute(f"{_SESSION} WHERE session_id = ?", (session_id,)).fetchone()
            return None if row is None else _session(row)

        return await self._readers.run("get_refresh_session", get_refresh_session)

    async def rotate_refresh_session(
        self, session_id: str, *, old_mac: bytes, new_mac: bytes, expires_at: int
    ) -> bool:
        def rotate_refresh_session(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT secret_mac FROM refresh_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            # A2: constant-time compare, so timing does not reveal how much of a guess matched.
            if row is None or not hmac.compare_digest(row[0], old_mac):
                return False
            conn.execute(
                "UPDATE refresh_sessions SET secret_mac = ?, expires_at = ? WHERE session_id = ?",
                (new_mac, expires_at, session_id),
            )
            return True

        return await self._writer.run("rotate_refresh_session", rotate_refresh_session)

    async def delete_refresh_session(self, session_id: str) -> None:
        def delete_refresh_session(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM refresh_sessions WHERE session_id = ?", (session_id,))

        await self._writer.run("delete_refresh_session", delete_refresh_session)

    # one-time login codes

    async def put_login_code(self, *, phone: str, mac: bytes, expires_at: int) -> None:
        def put_login_code(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO login_codes (phone, mac, expires_at, attempts)"
                " VALUES (?, ?, ?, 0)",
                (phone, mac, expires_at),
            )

        await self._writer.run("put_login_code", put_login_code)

    async def consume_login_code(
        self, *, phone: str, mac: bytes, now: int, max_attempts: int
    ) -> LoginCodeOutcome:
        def consume_login_code(conn: sqlite3.Connection) -> LoginCodeOutcome:
            row = conn.execute(
                "SELECT mac, expires_at, attempts FROM login_codes WHERE phone = ?", (phone,)
            ).fetchone()
            if row is None:
                return "missing"
            stored_mac, expires_at, attempts = row
            if now >= expires_at:
                conn.execute("DELETE FROM login_codes WHERE phone = ?", (phone,))
                return "expired"
            if attempts >= max_attempts:
                return "exhausted"
            if hmac.compare_digest(stored_mac, mac):  # A2: constant time
                conn.execute("DELETE FROM login_codes WHERE phone = ?", (phone,))
                return "ok"
            conn.execute("UPDATE login_codes SET attempts = attempts + 1 WHERE phone = ?", (phone,))
            return "exhausted" if attempts + 1 >= max_attempts else "wrong"

        return await self._writer.run("consume_login_code", consume_login_code)

    # QR contact tokens

    async def put_qr_token(self, *, token_hash: bytes, user_id: int, expires_at: int) -> None:
        def put_qr_token(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO qr_tokens (token_hash, user_id, expires_at)"
                " VALUES (?, ?, ?)",
                (token_hash, user_id, expires_at),
            )

        await self._writer.run("put_qr_token", put_qr_token)

    async def resolve_qr_token(self, *, token_hash: bytes, now: int) -> int | None:
        def resolve_qr_token(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT user_id FROM qr_tokens WHERE token_hash = ? AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._readers.run("resolve_qr_token", resolve_qr_token)

    # contacts (M5)

    async def get_contact(self, owner: int, peer: int) -> ContactRow | None:
        def get_contact(conn: sqlite3.Connection) -> ContactRow | None:
            row = conn.execute(f"{_CONTACT} WHERE owner = ? AND peer = ?", (owner, peer)).fetchone()
            return None if row is None else _contact(row)

        return await self._readers.run_inline("get_contact", get_contact)

    async def list_contacts(self, owner: int) -> list[ContactRow]:
        def list_contacts(conn: sqlite3.Connection) -> list[ContactRow]:
            rows = conn.execute(f"{_CONTACT} WHERE owner = ? ORDER BY peer", (owner,))
            return [_contact(row) for row in rows]

        return await self._readers.run("list_contacts", list_contacts)

    async def contacts_naming(self, peer: int) -> list[ContactRow]:
        def contacts_naming(conn: sqlite3.Connection) -> list[ContactRow]:
            rows = conn.execute(f"{_CONTACT} WHERE peer = ? ORDER BY owner", (peer,))
            return [_contact(row) for row in rows]

        return await self._readers.run("contacts_naming", contacts_naming)

    async def accepted_contacts(self, owner: int) -> list[int]:
        def accepted_contacts(conn: sqlite3.Connection) -> list[int]:
            # The peers alone, from the (owner, peer) primary key: no rows to build.
            rows = conn.execute(
                "SELECT peer FROM contacts WHERE owner = ? AND state = 'accepted' ORDER BY peer",
                (owner,),
            )
            return [peer for (peer,) in rows]

        return await self._readers.run("accepted_contacts", accepted_contacts)

    async def write_contacts(
        self,
        writes: Sequence[ContactWrite],
        *,
        now: int,
        idempotency: IdempotencyKey | None = None,
    ) -> tuple[list[PersonalChange], bool]:
        """Each stored row gets ``updated_at = now``."""
        writes = tuple(writes)

        def write_contacts(conn: sqlite3.Connection) -> tuple[list[PersonalChange], bool]:
            if idempotency is not None:
                original = _recorded_changes(conn, idempotency)
                if original is not None:
                    return original, True
            changes: list[PersonalChange] = []
            for write in writes:
                row = write.row
                if row.state is None:
                    conn.execute(
                        "DELETE FROM contacts WHERE owner = ? AND peer = ?", (row.owner, row.peer)
                    )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO contacts (owner, peer, state, note, updated_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (row.owner, row.peer, row.state, row.note, now),
                    )
                changes.append(_append_change(conn, row.owner, write.event_body))
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency (sender, client_id, fingerprint, created_at,"
                    " first_pstream, change_count) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        idempotency.sender,
                        idempotency.client_id,
                        idempotency.fingerprint,
                        now,
                        changes[0].pstream if changes else None,
                        len(changes),
                    ),
                )
            return changes, False

        return await self._writer.run("write_contacts", write_contacts)

    # settings (M3)

    async def get_settings(self, user_id: int) -> Settings:
        def get_settings(conn: sqlite3.Connection) -> Settings:
            row = conn.execute(
                "SELECT notifications FROM settings WHERE user_id = ?", (user_id,)
            ).fetchone()
            muted = conn.execute(
                "SELECT conv_id FROM muted_conversations WHERE user_id = ?", (user_id,)
            )
            return Settings(
                user_id=user_id,
                notifications=True if row is None else bool(row[0]),
                muted_conversations=frozenset(conv_id for (conv_id,) in muted),
            )

        return await self._readers.run_inline("get_settings", get_settings)

    async def write_settings(
        self,
        user_id: int,
        *,
        notifications: bool | None = None,
        mute_conversation: tuple[str, bool] | None = None,
        event_body: bytes,
        now: int,
    ) -> PersonalChange:
        def write_settings(conn: sqlite3.Connection) -> PersonalChange:
            if notifications is not None:
                conn.execute(
                    "INSERT INTO settings (user_id, notifications) VALUES (?, ?)"
                    " ON CONFLICT (user_id) DO UPDATE SET notifications = excluded.notifications",
                    (user_id, notifications),
                )
            if mute_conversation is not None:
                conv_id, muted = mute_conversation
                if muted:
                    conn.execute(
                        "INSERT OR IGNORE INTO muted_conversations (user_id, conv_id)"
                        " VALUES (?, ?)",
                        (user_id, conv_id),
                    )
                else:
                    conn.execute(
                        "DELETE FROM muted_conversations WHERE user_id = ? AND conv_id = ?",
                        (user_id, conv_id),
                    )
            return _append_change(conn, user_id, event_body)

        return await self._writer.run("write_settings", write_settings)

    # the personal stream

    async def personal_changes(
        self, user_id: int, *, after: int, limit: int
    ) -> list[PersonalChange]:
        def personal_changes(conn: sqlite3.Connection) -> list[PersonalChange]:
            rows = conn.execute(
                f"{_CHANGE} WHERE user_id = ? AND pstream > ? ORDER BY pstream LIMIT ?",
                (user_id, after, max(limit, 0)),
            )
            return [_change(row) for row in rows]

        return await self._readers.run("personal_changes", personal_changes)

    async def personal_head(self) -> int:
        def personal_head(conn: sqlite3.Connection) -> int:
            (head,) = conn.execute(
                "SELECT coalesce(max(pstream), 0) FROM personal_stream"
            ).fetchone()
            return int(head)

        return await self._readers.run_inline("personal_head", personal_head)

    async def prune_idempotency(self, *, older_than: int) -> int:
        def prune_idempotency(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM idempotency WHERE created_at < ?", (older_than,))
            return cursor.rowcount

        return await self._writer.run("prune_personal_idempotency", prune_idempotency)

    async def begin_deletion(self, user_id: int, *, now: int) -> User:
        def begin_deletion(conn: sqlite3.Connection) -> User:
            row = conn.execute(f"{_USER} WHERE user_id = ?", (user_id,)).fetchone()
            if row is None:
                raise KeyError(f"no user {user_id}")
            user = _user(row)
            if user.deleted:
                return user
            conn.execute("DELETE FROM login_codes WHERE phone = ?", (user.phone,))
            conn.execute("DELETE FROM refresh_sessions WHERE user_id = ?", (user_id,))
            conn.execute(
                "UPDATE users SET phone = ?, display_name = '', deleted_at = ?,"
                " token_generation = token_generation + 1 WHERE user_id = ?",
                (f"deleted:{user_id}", now, user_id),
            )
            return _user(conn.execute(f"{_USER} WHERE user_id = ?", (user_id,)).fetchone())

        return await self._writer.run("begin_account_deletion", begin_deletion)

    async def pending_deletions(self) -> list[int]:
        def pending(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT user_id FROM users WHERE deleted_at IS NOT NULL AND erased = 0"
                " ORDER BY user_id"
            )
            return [r[0] for r in rows]

        return await self._readers.run("pending_deletions", pending)

    async def erase_personal_data(self, user_id: int) -> None:
        def erase(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM contacts WHERE owner = ?1 OR peer = ?1", (user_id,))
            conn.execute("DELETE FROM settings WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM muted_conversations WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM personal_stream WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM qr_tokens WHERE user_id = ?", (user_id,))
            conn.execute("UPDATE users SET erased = 1 WHERE user_id = ?", (user_id,))

        await self._writer.run("erase_personal_data", erase)

    async def dormant_users(
        self, *, seen_before: int, after_user: int, limit: int
    ) -> list[tuple[User, int]]:
        def dormant(conn: sqlite3.Connection) -> list[tuple[User, int]]:
            rows = conn.execute(
                "SELECT u.user_id, u.phone, u.display_name, u.created_at, u.token_generation,"
                " u.suspended, u.deleted_at,"
                " COALESCE((SELECT MAX(d.last_seen_at) FROM devices d"
                " WHERE d.user_id = u.user_id), u.created_at) AS last_seen"
                " FROM users u WHERE u.deleted_at IS NULL AND u.user_id > ?"
                " AND last_seen < ? ORDER BY u.user_id LIMIT ?",
                (after_user, seen_before, max(limit, 0)),
            )
            return [(_user(row[:7]), row[7]) for row in rows]

        return await self._readers.run("dormant_users", dormant)


def _append_change(conn: sqlite3.Connection, user_id: int, body: bytes) -> PersonalChange:
    cursor = conn.execute(
        "INSERT INTO personal_stream (user_id, body) VALUES (?, ?)", (user_id, body)
    )
    assert cursor.lastrowid is not None
    return PersonalChange(pstream=cursor.lastrowid, user_id=user_id, body=body)


def _recorded_changes(conn: sqlite3.Connection, key: IdempotencyKey) -> list[PersonalChange] | None:
    """The changes the write with ``key`` made, or None if the key is new."""
    row = conn.execute(
        "SELECT fingerprint, first_pstream, change_count FROM idempotency"
        " WHERE sender = ? AND client_id = ?",
        (key.sender, key.client_id),
    ).fetchone()
    if row is None:
        return None
    fingerprint, first, count = row
    if fingerprint != key.fingerprint:
        raise IdempotencyConflict("idempotency key reused for a different request")
    if count == 0:
        return []
    # One writer, one transaction: the write's changes took consecutive positions.
    rows = conn.execute(
        f"{_CHANGE} WHERE pstream >= ? AND pstream < ? ORDER BY pstream", (first, first + count)
    )
    return [_change(change) for change in rows]


def _user(row: Any) -> User:
    user_id, phone, display_name, created_at, token_generation, suspended, deleted_at = row
    return User(
        user_id=user_id,
        phone=phone,
        display_name=display_name,
        created_at=created_at,
        token_generation=token_generation,
        suspended=bool(suspended),
        deleted=deleted_at is not None,
    )


def _device(row: Any) -> Device:
    (
        device_id,
        user_id,
        name,
        created_at,
        last_seen_at,
        acked_conversations,
        acked_personal,
        acked_organisation,
    ) = row
    return Device(
        device_id=device_id,
        user_id=user_id,
        name=name,
        created_at=created_at,
        last_seen_at=last_seen_at,
        acked_conversations=acked_conversations,
        acked_personal=acked_personal,
        acked_organisation=acked_organisation,
    )


def _session(row: Any) -> RefreshSession:
    session_id, user_id, device_id, secret_mac, generation, expires_at = row
    return RefreshSession(
        session_id=session_id,
        user_id=user_id,
        device_id=device_id,
        secret_mac=secret_mac,
        generation=generation,
        expires_at=expires_at,
    )


def _contact(row: Any) -> ContactRow:
    owner, peer, state, note, updated_at = row
    return ContactRow(owner=owner, peer=peer, state=state, note=note, updated_at=updated_at)


def _change(row: Any) -> PersonalChange:
    pstream, user_id, body = row
    return PersonalChange(pstream=pstream, user_id=user_id, body=body)
