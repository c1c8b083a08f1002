"""Sync tokens: where a device is in its user's change stream.

A user's change stream merges three durable streams: the conversation stream (messages,
recalls, read positions; cross domain), the personal stream (contacts, settings; personal
domain) and the organisation conversation stream (the same kinds of entries in
organisation-internal conversations, ids ``o:<org>:...``; D2). A token names a position in
each. Version 1 tokens (``1.<conversations>.<personal>``), from before organisation
conversations existed, still decode, at organisation position 0. Clients treat it as opaque text and
only ever send back a token the server gave them; the server refuses anything else with
``invalid_field``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol import limits
from protocol.errors import ErrorCode, ProtocolError

_POSITION = r"(0|[1-9][0-9]{0,15})"
_TOKEN = re.compile(rf"^(?:1\.{_POSITION}\.{_POSITION}|2\.{_POSITION}\.{_POSITION}\.{_POSITION})$")


@dataclass(frozen=True, slots=True, order=True)
class SyncToken:
    conversations: int
    personal: int
    organisation: int = 0

    def encode(self) -> str:
        return f"2.{self.conversations}.{self.personal}.{self.organisation}"

    @classmethod
    def decode(cls, text: str) -> SyncToken:
        match = _TOKEN.match(text)
        if match is None:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "not a sync token", path="$.token")
        if match.group(1) is not None:
            positions = (int(match.group(1)), int(match.group(2)), 0)
        else:
            positions = (int(match.group(3)), int(match.group(4)), int(match.group(5)))
        if max(positions) > limits.MAX_SAFE_INT:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "sync token out of range", path="$.token")
        return cls(*positions)

    def advanced(
        self,
        *,
        conversations: int | None = None,
        personal: int | None = None,
        organisation: int | None = None,
    ) -> SyncToken:
        """The later of this token and the given positions, stream by stream."""
        return SyncToken(
            max(self.conversations, conversations or 0),
            max(self.personal, personal or 0),
            max(self.organisation, organisation or 0),
        )


START = SyncToken(0, 0, 0)
