"""The Notifier: how the server reaches a person outside the app (codes, pushes, SMS, calls).

Guarantee: **at least once, per accepted call**. A call that returns normally was accepted
by the backend (written durably, or handed to its gateway); a call that raises
``NotifyError`` was not, and the caller decides whether to retry. The caller may call again
with the same arguments after a failure or a restart, so ``send_sms`` and ``place_call``
take an ``idempotency_key`` naming the logical notification: a backend with a gateway
passes it on so the person gets one SMS or call per key; backends that only record
(``MemoryNotifier``, ``OutboxNotifier``) record every call with its key, and whoever
consumes the record dedupes by it. If a call is cancelled, the notification may or may not
have been accepted.

Policy is decided before a Notifier is called, never inside one (house habit 3): the
router has already checked the code throttle (C2), the user's notification settings and
mutes (M3) and the DING quota (G2). Implementations must not log a login code or a
message body.

Every backend runs the conformance suite in ``tests/server/test_notify.py`` (habit 7).
"""

from __future__ import annotations

from typing import Protocol


class NotifyError(Exception):
    """The notification was not accepted; nothing was delivered because of this call.

    ``retryable`` is True for transient failures (disk full, gateway unavailable)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(Protocol):
    async def send_login_code(self, *, phone: str, code: str) -> None:
        """Send the one-time login code ``code`` to ``phone`` (A2, P1). The backend words
        the message; ``code`` must not be logged."""

    async def push(self, *, user_id: int, device_id: int, title: str, body: str, conv: str) -> None:
        """An offline push to one device of ``user_id`` about a new message in ``conv`` (M3).
        ``title`` and ``body`` are display text the router prepared (it may shorten or
        generalise the body); the user's settings were already applied."""

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        """Send ``text`` to ``phone`` by SMS (DING escalation, G1). One SMS per
        ``idempotency_key`` where the backend can dedupe (see the module doc)."""

    async def place_call(self, *, phone: str, text: str, idempotency_key: str) -> None:
        """Call ``phone`` and read ``text`` aloud (DING escalation, G1). One call per
        ``idempotency_key`` where the backend can dedupe (see the module doc)."""
