"""Sync tokens: where a device is in its user's change stream.

A user's change stream merges two durable streams: the conversation stream (messages,
recalls, read positions; cross domain) and the personal stream (contacts, settings;
personal domain). A token names a position in each. Clients treat it as opaque text and
only ever send back a token the server gave them; the server refuses anything else with
``invalid_field``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol import limits
from protocol.errors import ErrorCode, ProtocolError

_TOKEN = re.compile(r"^1\.(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})$")


@dataclass(frozen=True, slots=True, order=True)
class SyncToken:
    conversations: int
    personal: int

    def encode(self) -> str:
        return f"1.{self.conversations}.{self.personal}"

    @classmethod
    def decode(cls, text: str) -> SyncToken:
        match = _TOKEN.match(text)
        if match is None:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "not a sync token", path="$.token")
        conversations, personal = int(match.group(1)), int(match.group(2))
        if conversations > limits.MAX_SAFE_INT or personal > limits.MAX_SAFE_INT:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "sync token out of range", path="$.token")
        return cls(conversations, personal)

    def advanced(
        self, *, conversations: int | None = None, personal: int | None = None
    ) -> SyncToken:
        """The later of this token and the given positions, stream by stream."""
        return SyncToken(
            max(self.conversations, conversations or 0), max(self.personal, personal or 0)
        )


START = SyncToken(0, 0)
