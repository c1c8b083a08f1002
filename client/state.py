"""What a client keeps across connections: credentials, sync token, de-duplication and
the messages sent but not yet acknowledged (resent, with the same cmid, on reconnect)."""

from __future__ import annotations

from dataclasses import dataclass, field

from client.dedup import Deduper
from protocol.requests import MsgSend


@dataclass
class ClientState:
    access_token: str | None = None
    refresh_token: str | None = None
    user_id: int | None = None
    device_id: int | None = None
    sync_token: str | None = None
    dedup: Deduper = field(default_factory=Deduper)
    #: cmid -> the request, until its ack arrives.
    unacked: dict[str, MsgSend] = field(default_factory=dict)
