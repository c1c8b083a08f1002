"""MemoryNotifier: records every call in lists, for tests (and the ``memory`` demo mode)."""

from __future__ import annotations

import trio

from server.clock import Clock, SystemClock
from server.notify.records import (
    CallRecord,
    LoginCodeRecord,
    NotifyRecord,
    PushRecord,
    SmsRecord,
)


class MemoryNotifier:
    """A ``Notifier`` that keeps what it was asked to send.

    ``records`` holds every call in order; ``login_codes``, ``pushes``, ``sms`` and
    ``calls`` hold the same records by kind. Each call is a trio checkpoint, like a real
    backend's. Nothing is ever dropped or deduplicated.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self.records: list[NotifyRecord] = []
        self.login_codes: list[LoginCodeRecord] = []
        self.pushes: list[PushRecord] = []
        self.sms: list[SmsRecord] = []
        self.calls: list[CallRecord] = []

    async def send_login_code(self, *, phone: str, code: str) -> None:
        await trio.lowlevel.checkpoint()
        record = LoginCodeRecord(time=self._clock.now_ms(), phone=phone, code=code)
        self.login_codes.append(record)
        self.records.append(record)

    async def push(self, *, user_id: int, device_id: int, title: str, body: str, conv: str) -> None:
        await trio.lowlevel.checkpoint()
        record = PushRecord(
            time=self._clock.now_ms(),
            user_id=user_id,
            device_id=device_id,
            title=title,
            body=body,
            conv=conv,
        )
        self.pushes.append(record)
        self.records.append(record)

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await trio.lowlevel.checkpoint()
        record = SmsRecord(
            time=self._clock.now_ms(), phone=phone, text=text, idempotency_key=idempotency_key
        )
        self.sms.append(record)
        self.records.append(record)

    async def place_call(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await trio.lowlevel.checkpoint()
        record = CallRecord(
            time=self._clock.now_ms(), phone=phone, text=text, idempotency_key=idempotency_key
        )
        self.calls.append(record)
        self.records.append(record)

    def last_code(self, phone: str) -> str | None:
        """The newest login code sent to ``phone``, or None (what a test client types)."""
        for record in reversed(self.login_codes):
            if record.phone == phone:
                return record.code
        return None

    def statistics(self) -> dict[str, int]:
        return {"recorded": len(self.records)}
