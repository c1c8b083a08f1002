"""The identity flows (A2) over the building blocks in ``server.auth``: creating users,
issuing tokens for a device, and checking a presented access token against the store."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from protocol import replies
from server.auth import (
    AccessTokens,
    AuthFailed,
    CodeRequestThrottle,
    LoginCodes,
    RefreshTokens,
    ServerKeys,
    check_generation,
)
from server.clock import Clock
from server.config import Config
from storage import errors as store_errors
from storage.records import Device, User
from storage.stores import Stores


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    access_expires_at: int
    refresh_token: str
    refresh_expires_at: int


class Credentials:
    def __init__(self, keys: ServerKeys, clock: Clock, config: Config) -> None:
        self.clock = clock
        self.access = AccessTokens(keys, ttl_seconds=config.access_token_ttl)
        self.refresh = RefreshTokens(
            keys.mac_key, ttl_seconds=config.refresh_token_ttl_days * 86400
        )
        self.codes = LoginCodes(keys.mac_key)
        #: Keys the opaque conversation references in organisations' copies (D4); derived
        #: from the MAC key so it is stable across restarts and separate from its other use.
        self.ref_key = hmac.new(
            keys.mac_key, b"rivet/org-conversation-ref", hashlib.sha256
        ).digest()
        self.code_throttle = CodeRequestThrottle(clock)

    @classmethod
    def open(cls, config: Config, clock: Clock) -> Credentials:
        """Keys persist in the data directory with the SQLite store; the memory store
        (tests, demos) uses keys that live as long as the process."""
        if config.store == "memory":
            return cls(ServerKeys.ephemeral(), clock, config)
        return cls(ServerKeys.open(config.data_dir), clock, config)

    async def create_user(self, stores: Stores, *, phone: str, display_name: str) -> User:
        """The user with this phone number, created if new (P1)."""
        existing = await stores.personal.get_user_by_phone(phone)
        if existing is not None:
            return existing
        try:
            return await stores.personal.create_user(
                phone=phone, display_name=display_name or phone, now=self.clock.now_ms()
            )
        except store_errors.AlreadyExists:
            user = await stores.personal.get_user_by_phone(phone)
            assert user is not None
            return user

    async def issue(self, stores: Stores, user: User, device: Device) -> IssuedTokens:
        now = self.clock.now_ms()
        access = self.access.issue(
            user_id=user.user_id,
            device_id=device.device_id,
            generation=user.token_generation,
            now_ms=now,
        )
        refresh_text, session = self.refresh.mint(
            user_id=user.user_id,
            device_id=device.device_id,
            generation=user.token_generation,
            now_ms=now,
        )
        await stores.personal.put_refresh_session(session)
        return IssuedTokens(
            access_token=access,
            access_expires_at=now + self.access.ttl_ms,
            refresh_token=refresh_text,
            refresh_expires_at=session.expires_at,
        )

    async def issue_for_new_device(
        self, stores: Stores, user: User, *, device_name: str
    ) -> dict[str, object]:
        device = await stores.personal.register_device(
            user_id=user.user_id, name=device_name, now=self.clock.now_ms()
        )
        tokens = await self.issue(stores, user, device)
        return {
            "device_id": device.device_id,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
        }

    async def authenticate(self, stores: Stores, token: str) -> tuple[User, Device]:
        """The user and device behind a valid access token of the current generation."""
        claims = self.access.verify(token, self.clock.now_ms())
        user = await stores.personal.get_user(claims.user_id)
        device = await stores.personal.get_device(claims.device_id)
        if user is None or device is None or device.user_id != user.user_id:
            raise AuthFailed("unknown user or device")
        check_generation(claims.generation, current=user.token_generation)
        return user, device

    def tokens_reply(self, tokens: IssuedTokens, session: replies.Session) -> replies.Tokens:
        return replies.Tokens(
            access_token=tokens.access_token,
            access_expires_at=tokens.access_expires_at,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=tokens.refresh_expires_at,
            session=session,
        )
