"""The in-memory personal store (D1), the reference implementation of ``PersonalStore``.

Every method runs to completion without awaiting, so under trio each one is a single atomic
transaction. Rows are frozen records, replaced on update, so handing them out is safe.
"""

from __future__ import annotations

import hmac
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from msgspec.structs import replace

from storage.errors import AlreadyExists
from storage.memory.idempotency import IdempotencyLog
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


@dataclass(frozen=True, slots=True)
class _LoginCode:
    mac: bytes
    expires_at: int
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class _QrToken:
    user_id: int
    expires_at: int


class MemoryPersonalStore:
    def __init__(self) -> None:
        self._users: dict[int, User] = {}
        self._user_by_phone: dict[str, int] = {}
        self._devices: dict[int, Device] = {}
        self._sessions: dict[str, RefreshSession] = {}
        self._login_codes: dict[str, _LoginCode] = {}
        self._qr_tokens: dict[bytes, _QrToken] = {}
        self._contacts: dict[tuple[int, int], ContactRow] = {}
        self._settings: dict[int, Settings] = {}
        #: Each user's personal-stream entries, ascending by ``pstream``.
        self._changes: dict[int, list[PersonalChange]] = {}
        self._pstream = 0
        self._last_user_id = 0
        self._last_device_id = 0
        self._idempotency: IdempotencyLog[tuple[PersonalChange, ...]] = IdempotencyLog()
        #: A1: deleted accounts whose personal data is not erased yet.
        self._pending_erasure: set[int] = set()

    # users

    async def create_user(self, *, phone: str, display_name: str, now: int) -> User:
        if phone in self._user_by_phone:
            raise AlreadyExists("phone number already registered")
        self._last_user_id += 1
        user = User(
            user_id=self._last_user_id, phone=phone, display_name=display_name, created_at=now
        )
        self._users[user.user_id] = user
        self._user_by_phone[phone] = user.user_id
        return user

    async def get_user(self, user_id: int) -> User | None:
        return self._users.get(user_id)

    async def get_user_by_phone(self, phone: str) -> User | None:
        user_id = self._user_by_phone.get(phone)
        return None if user_id is None else self._users[user_id]

    async def get_users(self, user_ids: Sequence[int]) -> list[User]:
        return [self._users[i] for i in sorted(set(user_ids)) if i in self._users]

    async def set_display_name(self, user_id: int, display_name: str) -> None:
        user = self._users.get(user_id)
        if user is not None:
            self._users[user_id] = replace(user, display_name=display_name)

    async def bump_token_generation(self, user_id: int) -> int:
        """``KeyError`` if the user does not exist."""
        user = self._users[user_id]
        self._users[user_id] = user = replace(user, token_generation=user.token_generation + 1)
        # A2: logout_all also ends every refresh session, so no old refresh token rotates.
        for session_id in [s.session_id for s in self._sessions.values() if s.user_id == user_id]:
            del self._sessions[session_id]
        return user.token_generation

    async def set_suspended(self, user_id: int, suspended: bool) -> bool:
        user = self._users.get(user_id)
        if user is None:
            return False
        self._users[user_id] = replace(user, suspended=suspended)
        return True

    # devices

    async def register_device(self, *, user_id: int, name: str, now: int) -> Device:
        self._last_device_id += 1
        device = Device(
            device_id=self._last_device_id,
            user_id=user_id,
            name=name,
            created_at=now,
            last_seen_at=now,
        )
        self._devices[device.device_id] = device
        return device

    async def get_device(self, device_id: int) -> Device | None:
        return self._devices.get(device_id)

    async def list_devices(self, user_id: int) -> list[Device]:
        return [d for d in self._devices.values() if d.user_id == user_id]  # insertion = id order

    async def touch_device(self, device_id: int, *, now: int) -> None:
        device = self._devices.get(device_id)
        if device is not None:
            self._devices[device_id] = replace(device, last_seen_at=now)

    async def touch_devices(self, seen: Sequence[tuple[int, int]]) -> None:
        for device_id, at in seen:
            device = self._devices.get(device_id)
            if device is not None:
                self._devices[device_id] = replace(
                    device, last_seen_at=max(device.last_seen_at, at)
                )

    async def ack_device(
        self, device_id: int, *, conversations: int, personal: int, organisation: int = 0
    ) -> None:
        device = self._devices.get(device_id)
        if device is not None:
            self._devices[device_id] = replace(
                device,
                acked_conversations=max(device.acked_conversations, conversations),
                acked_personal=max(device.acked_personal, personal),
                acked_organisation=max(device.acked_organisation, organisation),
            )

    # refresh sessions

    async def put_refresh_session(self, session: RefreshSession) -> None:
        self._sessions[session.session_id] = session

    async def get_refresh_session(self, session_id: str) -> RefreshSession | None:
        return self._sessions.get(session_id)

    async def rotate_refresh_session(
        self, session_id: str, *, old_mac: bytes, new_mac: bytes, expires_at: int
    ) -> bool:
        session = self._sessions.get(session_id)
        # A2: constant-time compare, so timing does not reveal how much of a guess matched.
        if session is None or not hmac.compare_digest(session.secret_mac, old_mac):
            return False
        self._sessions[session_id] = replace(session, secret_mac=new_mac, expires_at=expires_at)
        return True

    async def delete_refresh_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # one-time login codes

    async def put_login_code(self, *, phone: str, mac: bytes, expires_at: int) -> None:
        self._login_codes[phone] = _LoginCode(mac=mac, expires_at=expires_at)

    async def consume_login_code(
        self, *, phone: str, mac: bytes, now: int, max_attempts: int
    ) -> LoginCodeOutcome:
        code = self._login_codes.get(phone)
        if code is None:
            return "missing"
        if now >= code.expires_at:
            del self._login_codes[phone]
            return "expired"
        if code.attempts >= max_attempts:
            return "exhausted"
        if hmac.compare_digest(code.mac, mac):  # A2: constant time
            del self._login_codes[phone]
            return "ok"
        attempts = code.attempts + 1
        self._login_codes[phone] = _LoginCode(code.mac, code.expires_at, attempts)
        return "exhausted" if attempts >= max_attempts else "wrong"

    # QR contact tokens

    async def put_qr_token(self, *, token_hash: bytes, user_id: int, expires_at: int) -> None:
        self._qr_tokens[token_hash] = _QrToken(user_id=user_id, expires_at=expires_at)

    async def resolve_qr_token(self, *, token_hash: bytes, now: int) -> int | None:
        token = self._qr_tokens.get(token_hash)
        if token is None or now >= token.expires_at:
            return None
        return token.user_id

    # contacts (M5)

    async def get_contact(self, owner: int, peer: int) -> ContactRow | None:
        return self._contacts.get((owner, peer))

    async def list_contacts(self, owner: int) -> list[ContactRow]:
        rows = [row for (o, _), row in self._contacts.items() if o == owner]
        return sorted(rows, key=lambda row: row.peer)

    async def contacts_naming(self, peer: int) -> list[ContactRow]:
        rows = [row for (_, p), row in self._contacts.items() if p == peer]
        return sorted(rows, key=lambda row: row.owner)

    async def accepted_contacts(self, owner: int) -> list[int]:
        return [row.peer for row in await self.list_contacts(owner) if row.state == "accepted"]

    async def write_contacts(
        self,
        writes: Sequence[ContactWrite],
        *,
        now: int,
        idempotency: IdempotencyKey | None = None,
    ) -> tuple[list[PersonalChange], bool]:
        """Each stored row gets ``updated_at = now``."""
        original = self._idempotency.lookup(idempotency)
        if original is not None:
            return list(original), True
        changes: list[PersonalChange] = []
        for write in writes:
            row = write.row
            if row.state is None:
                self._contacts.pop((row.owner, row.peer), None)
            else:
                self._contacts[(row.owner, row.peer)] = replace(row, updated_at=now)
            changes.append(self._append_change(row.owner, write.event_body))
        self._idempotency.record(idempotency, tuple(changes), now=now)
        return changes, False

    # settings (M3)

    async def get_settings(self, user_id: int) -> Settings:
        return self._settings_of(user_id)

    async def write_settings(
        self,
        user_id: int,
        *,
        notifications: bool | None = None,
        mute_conversation: tuple[str, bool] | None = None,
        event_body: bytes,
        now: int,
    ) -> PersonalChange:
        settings = self._settings_of(user_id)
        if notifications is not None:
            settings = replace(settings, notifications=notifications)
        if mute_conversation is not None:
            conv_id, muted = mute_conversation
            muted_ids = settings.muted_conversations
            muted_ids = (muted_ids | {conv_id}) if muted else (muted_ids - {conv_id})
            settings = replace(settings, muted_conversations=muted_ids)
        self._settings[user_id] = settings
        return self._append_change(user_id, event_body)

    # the personal stream

    async def personal_changes(
        self, user_id: int, *, after: int, limit: int
    ) -> list[PersonalChange]:
        changes = self._changes.get(user_id, [])
        start = bisect_right(changes, after, key=lambda change: change.pstream)
        return changes[start : start + max(limit, 0)]

    async def personal_head(self) -> int:
        return self._pstream

    async def prune_idempotency(self, *, older_than: int) -> int:
        return self._idempotency.prune(older_than=older_than)

    def _settings_of(self, user_id: int) -> Settings:
        settings = self._settings.get(user_id)
        return Settings(user_id=user_id) if settings is None else settings

    def _append_change(self, user_id: int, body: bytes) -> PersonalChange:
        self._pstream += 1
        change = PersonalChange(pstream=self._pstream, user_id=user_id, body=body)
        self._changes.setdefault(user_id, []).append(change)
        return change

    async def begin_deletion(self, user_id: int, *, now: int) -> User:
        user = self._users[user_id]
        if user.deleted:
            return user
        self._user_by_phone.pop(user.phone, None)
        self._login_codes.pop(user.phone, None)
        user = replace(
            user,
            phone=f"deleted:{user_id}",
            display_name="",
            token_generation=user.token_generation + 1,
            deleted=True,
        )
        self._users[user_id] = user
        for session_id in [k for k, v in self._sessions.items() if v.user_id == user_id]:
            del self._sessions[session_id]
        self._pending_erasure.add(user_id)
        return user

    async def pending_deletions(self) -> list[int]:
        return sorted(self._pending_erasure)

    async def erase_personal_data(self, user_id: int) -> None:
        for device_id in [k for k, d in self._devices.items() if d.user_id == user_id]:
            del self._devices[device_id]
        for key in [k for k in self._contacts if user_id in k]:
            del self._contacts[key]
        self._settings.pop(user_id, None)
        self._changes.pop(user_id, None)
        for token in [k for k, t in self._qr_tokens.items() if t.user_id == user_id]:
            del self._qr_tokens[token]
        self._pending_erasure.discard(user_id)

    async def dormant_users(
        self, *, seen_before: int, after_user: int, limit: int
    ) -> list[tuple[User, int]]:
        out: list[tuple[User, int]] = []
        for user_id in sorted(self._users):
            user = self._users[user_id]
            if user_id <= after_user or user.deleted:
                continue
            seen = [d.last_seen_at for d in self._devices.values() if d.user_id == user_id]
            last = max(seen) if seen else user.created_at
            if last < seen_before:
                out.append((user, last))
                if len(out) == limit:
                    break
        return out
