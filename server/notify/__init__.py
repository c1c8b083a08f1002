"""Reaching people outside the app, behind the ``Notifier`` seam (A2 codes, M3, G1).

``MemoryNotifier`` for tests, ``OutboxNotifier`` (``<data_dir>/outbox.jsonl``) when no
gateway is configured; both record ``records.NotifyRecord`` values.
"""

from server.notify.interface import Notifier, NotifyError
from server.notify.memory import MemoryNotifier
from server.notify.outbox import OutboxNotifier, outbox_path, read_outbox
from server.notify.records import (
    CallRecord,
    LoginCodeRecord,
    NotifyKind,
    NotifyRecord,
    PushRecord,
    SmsRecord,
)

__all__ = [
    "CallRecord",
    "LoginCodeRecord",
    "MemoryNotifier",
    "Notifier",
    "NotifyError",
    "NotifyKind",
    "NotifyRecord",
    "OutboxNotifier",
    "PushRecord",
    "SmsRecord",
    "outbox_path",
    "read_outbox",
]
