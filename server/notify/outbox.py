"""OutboxNotifier: every notification becomes one JSON line in ``<data_dir>/outbox.jsonl``.

The default Notifier when no SMS or push gateway is configured: an operator (or a relay
process) reads the file, e.g. with ``rivet outbox --phone +8613800000000 --last 1`` to see
a login code during a demo. It is a delivery channel, not a log, so it holds login codes:
the file is created with mode 0600 (readable only by the server's user), a looser mode on
an existing file is tightened, and symlinks are refused.

Each record is one ``write`` to a descriptor opened with ``O_APPEND`` (lines never
interleave, even with other writers), followed by ``fdatasync`` before the call returns
(accepted means durable, A3). The blocking work runs in ``trio.to_thread.run_sync`` so the
event loop never waits on the disk; it is not abandoned on cancellation, so a cancelled call
may still have written its line. The file is opened per write, so moving it away (log
rotation) is safe: the next write creates a new one.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import Final

import msgspec
import trio

from server.clock import Clock, SystemClock
from server.notify.interface import NotifyError
from server.notify.records import (
    CallRecord,
    LoginCodeRecord,
    NotifyKind,
    NotifyRecord,
    PushRecord,
    SmsRecord,
)

OUTBOX_FILENAME: Final = "outbox.jsonl"
OUTBOX_MODE: Final = 0o600

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(NotifyRecord)


def outbox_path(data_dir: Path) -> Path:
    return Path(data_dir) / OUTBOX_FILENAME


class OutboxNotifier:
    """A ``Notifier`` that appends to a JSON-lines file (see the module doc)."""

    def __init__(self, data_dir: Path, *, clock: Clock | None = None) -> None:
        """Append to ``outbox_path(data_dir)``; nothing is opened until the first call."""
        self._path = outbox_path(data_dir)
        self._clock: Clock = clock or SystemClock()
        # Serialises the write() calls of this notifier's threads, so a short write's
        # remainder is never separated from its start by another line.
        self._write_lock = threading.Lock()
        self._written = 0

    @property
    def path(self) -> Path:
        """The outbox file, ``<data_dir>/outbox.jsonl``."""
        return self._path

    async def send_login_code(self, *, phone: str, code: str) -> None:
        await self._append(LoginCodeRecord(time=self._clock.now_ms(), phone=phone, code=code))

    async def push(self, *, user_id: int, device_id: int, title: str, body: str, conv: str) -> None:
        await self._append(
            PushRecord(
                time=self._clock.now_ms(),
                user_id=user_id,
                device_id=device_id,
                title=title,
                body=body,
                conv=conv,
            )
        )

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await self._append(
            SmsRecord(
                time=self._clock.now_ms(), phone=phone, text=text, idempotency_key=idempotency_key
            )
        )

    async def place_call(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await self._append(
            CallRecord(
                time=self._clock.now_ms(), phone=phone, text=text, idempotency_key=idempotency_key
            )
        )

    def statistics(self) -> dict[str, int]:
        return {"written": self._written}

    async def _append(self, record: NotifyRecord) -> None:
        line = _encoder.encode(record) + b"\n"
        try:
            await trio.to_thread.run_sync(self._append_line, line)
        except OSError as exc:
            # The message names the file and the errno only: never the record (A2).
            raise NotifyError(f"cannot append to {self._path}: {exc.strerror}") from None
        self._written += 1

    def _append_line(self, line: bytes) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path, flags, OUTBOX_MODE)
        try:
            if os.fstat(fd).st_mode & 0o777 != OUTBOX_MODE:
                os.fchmod(fd, OUTBOX_MODE)  # a umask or an older file must not widen it
            with self._write_lock:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)


def read_outbox(
    path: Path,
    *,
    kind: NotifyKind | None = None,
    phone: str | None = None,
    last: int | None = None,
) -> list[NotifyRecord]:
    """The records of an outbox file, oldest first, for ``rivet outbox``.

    ``kind`` and ``phone`` filter (a ``phone`` filter drops pushes, which have none);
    ``last`` keeps only the newest ``last`` matches. A missing file reads as empty. Lines
    that do not decode (the torn last line of a crash, a kind this version does not know)
    are skipped. Blocking: from async code, call it through ``trio.to_thread.run_sync``.
    """
    if last is not None and last < 0:
        raise ValueError("last must not be negative")
    matches: deque[NotifyRecord] = deque(maxlen=last)
    if not path.exists():
        return []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = _decoder.decode(line)
            except msgspec.DecodeError:
                continue
            if kind is not None and record.kind != kind:
                continue
            if phone is not None and getattr(record, "phone", None) != phone:
                continue
            matches.append(record)
    return list(matches)
