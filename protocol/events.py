"""Events the server pushes, tagged by ``op`` (``ev.*``).

Durable events carry a stream position: ``stream`` for the conversation stream (cross
domain), ``pstream`` for the user's personal stream. ``sync`` returns the same events, so a
device that was offline sees exactly what an online one saw. Ephemeral events (presence,
typing, coalesced receipt counts) carry none and are never stored.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol import limits
from protocol.requests import Content
from protocol.types import (
    ClientMessageId,
    ConversationId,
    MessageId,
    Role,
    Seq,
    StreamPos,
    Timestamp,
    UserId,
)

SystemAction = Literal[
    "created",
    "added",
    "removed",
    "left",
    "renamed",
    "role",
    "transferred",
    "member_muted",
    "mute_all",
    "history",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", forbid_unknown_fields=False):
    pass


class SystemInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a membership or settings change did; it holds a place in the sequence."""

    action: SystemAction
    actor: UserId
    users: list[UserId] = msgspec.field(default_factory=list)
    title: str | None = None
    role: Role | None = None
    flag: bool | None = None


class MessageEvent(Event, tag="ev.message", omit_defaults=True, frozen=True):
    """A message or system event at ``seq`` in ``conv``. A recalled message keeps its seq
    with ``recalled`` true and no content."""

    stream: StreamPos
    conv: ConversationId
    seq: Seq
    msg_id: MessageId
    sender: UserId
    ts: Timestamp
    cmid: ClientMessageId | None = None
    content: Content | None = None
    system: SystemInfo | None = None
    recalled: bool = False


class RecallEvent(Event, tag="ev.recall", frozen=True):
    stream: StreamPos
    conv: ConversationId
    seq: Seq
    #: Who recalled it; 0 when the platform's moderators withdrew it (C1).
    by: Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
    ts: Timestamp


class ReadEvent(Event, tag="ev.read", frozen=True, omit_defaults=True):
    """A member's read position moved. Sent to the reader's own devices and, in a single
    chat, to the peer as a read receipt. Live, ``unread`` is the reader's new unread count
    in ``conv``; replayed by ``sync`` it is absent (the summary carries the current count)."""

    stream: StreamPos
    conv: ConversationId
    user: UserId
    seq: Seq
    unread: int | None = None


class ContactEvent(Event, tag="ev.contact", frozen=True):
    pstream: StreamPos
    user_id: UserId
    state: Literal["requested", "pending", "accepted", "declined", "blocked", "none"]
    note: str = ""


class SettingsEvent(Event, tag="ev.settings", omit_defaults=True, frozen=True):
    pstream: StreamPos
    notifications: bool
    conv: ConversationId | None = None
    conv_muted: bool | None = None


class ReceiptsEvent(Event, tag="ev.receipts", frozen=True):
    """Coalesced read counts for messages the receiving user sent (ephemeral)."""

    conv: ConversationId
    counts: list[ReceiptCountItem]


class ReceiptCountItem(msgspec.Struct, frozen=True, kw_only=True):
    seq: Seq
    read: int


class PresenceEvent(Event, tag="ev.presence", frozen=True):
    user: UserId
    online: bool


class TypingEvent(Event, tag="ev.typing", frozen=True):
    conv: ConversationId
    user: UserId


#: Durable events, as pushed live and as returned by ``sync``.
SyncEvent = MessageEvent | RecallEvent | ReadEvent | ContactEvent | SettingsEvent

#: The core events; ``protocol.catalog.AnyEvent`` adds the feature modules' events.
CoreEvent = (
    MessageEvent
    | RecallEvent
    | ReadEvent
    | ContactEvent
    | SettingsEvent
    | ReceiptsEvent
    | PresenceEvent
    | TypingEvent
)

__all__ = [
    "ContactEvent",
    "CoreEvent",
    "MessageEvent",
    "PresenceEvent",
    "ReadEvent",
    "RecallEvent",
    "ReceiptCountItem",
    "ReceiptsEvent",
    "SettingsEvent",
    "SyncEvent",
    "SystemInfo",
    "TypingEvent",
]
