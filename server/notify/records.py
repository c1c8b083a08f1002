"""What a recording Notifier records: one typed record per accepted call.

Shared by ``MemoryNotifier`` (kept in lists) and ``OutboxNotifier`` (one JSON object per
line, the ``kind`` field naming the type, ``time`` in ms since the epoch, then the call's
keyword arguments), so tests and ``rivet outbox`` read both the same way.
"""

from __future__ import annotations

from typing import Literal

import msgspec

NotifyKind = Literal["login_code", "push", "sms", "call"]


class _Record(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    #: When the notification was accepted, ms since the epoch (the notifier's clock).
    time: int

    @property
    def kind(self) -> NotifyKind:
        tag: NotifyKind = self.__struct_config__.tag  # type: ignore[assignment]
        return tag


class LoginCodeRecord(_Record, frozen=True, kw_only=True, tag="login_code"):
    phone: str
    code: str


class PushRecord(_Record, frozen=True, kw_only=True, tag="push"):
    user_id: int
    device_id: int
    title: str
    body: str
    conv: str


class SmsRecord(_Record, frozen=True, kw_only=True, tag="sms"):
    phone: str
    text: str
    idempotency_key: str


class CallRecord(_Record, frozen=True, kw_only=True, tag="call"):
    phone: str
    text: str
    idempotency_key: str


NotifyRecord = LoginCodeRecord | PushRecord | SmsRecord | CallRecord
