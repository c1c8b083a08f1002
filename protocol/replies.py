"""Replies: exactly one ``ok`` or ``error`` per request, carrying the request's ``rid``.

``ok.result`` is a map whose shape depends on the request's op; ``RESULT_TYPES`` names it
for every op, so clients (and the docs test) decode it with the right type.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from protocol import requests as rq
from protocol.events import MessageEvent, SyncEvent
from protocol.types import (
    ConversationId,
    DeviceId,
    MessageId,
    Role,
    Seq,
    StreamPos,
    Timestamp,
    UserId,
)


class Ok(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="ok"):
    rid: int
    result: Any


class Error(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="error", omit_defaults=True
):
    """``rid`` is absent only when the frame was too broken to read one."""

    code: int
    name: str
    message: str
    retryable: bool
    rid: int | None = None
    path: str | None = None
    retry_after: float | None = None


class Result(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    pass


class Done(Result, frozen=True):
    """The result of ops that return nothing but success."""


class ClientLimits(Result, frozen=True):
    max_frame_bytes: int
    max_text_chars: int
    max_users_per_request: int
    max_page: int
    group_member_limit: int
    send_rate_per_second: float
    send_burst: int


class Session(Result, frozen=True):
    user_id: UserId
    device_id: DeviceId
    server_time: Timestamp
    limits: ClientLimits


class HelloResult(Result, frozen=True):
    protocol_version: int
    server_time: Timestamp
    limits: ClientLimits
    session: Session | None = None


class CodeSent(Result, frozen=True):
    expires_at: Timestamp


class Tokens(Result, frozen=True):
    access_token: str
    access_expires_at: Timestamp
    refresh_token: str
    refresh_expires_at: Timestamp
    session: Session


class Pong(Result, frozen=True):
    server_time: Timestamp


class DeviceInfo(Result, frozen=True):
    device_id: DeviceId
    name: str
    created_at: Timestamp
    last_seen_at: Timestamp
    current: bool


class Devices(Result, frozen=True):
    devices: list[DeviceInfo]


class UserInfo(Result, frozen=True):
    user_id: UserId
    display_name: str


class Users(Result, frozen=True):
    users: list[UserInfo]


class Sent(Result, frozen=True):
    """The ack of ``msg.send``: sent only after the message is durable."""

    conv: ConversationId
    seq: Seq
    msg_id: MessageId
    ts: Timestamp
    stream: StreamPos
    duplicate: bool


class Recalled(Result, frozen=True):
    conv: ConversationId
    seq: Seq
    stream: StreamPos


class History(Result, frozen=True):
    conv: ConversationId
    messages: list[MessageEvent]
    more: bool


class ConversationSummary(Result, frozen=True):
    conv: ConversationId
    kind: Literal["direct", "self", "group"]
    title: str
    last_seq: Seq
    read_seq: Seq
    unread: int
    muted: bool
    last_message: MessageEvent | None = None
    left: bool = False


class SyncPage(Result, frozen=True):
    token: str
    summaries: list[ConversationSummary]
    events: list[SyncEvent]
    more: bool


class ReadDone(Result, frozen=True):
    conv: ConversationId
    seq: Seq
    unread: int


class ReceiptCount(Result, frozen=True):
    seq: Seq
    read: int
    unread: int


class ReceiptCounts(Result, frozen=True):
    conv: ConversationId
    counts: list[ReceiptCount]


class ReceiptMembers(Result, frozen=True):
    conv: ConversationId
    seq: Seq
    users: list[UserId]
    next_after: int | None


class ConversationInfo(Result, frozen=True):
    conv: ConversationId
    kind: Literal["direct", "self", "group"]
    title: str
    owner: UserId | None
    created_at: Timestamp
    member_count: int
    member_limit: int
    mute_all: bool
    history_visible: bool
    last_seq: Seq
    #: M2: when the paid expansion that gives ``member_limit`` lapses (the group then keeps
    #: its members but admits nobody beyond its base limit); None at the base limit.
    expansion_expires_at: Timestamp | None = None


class Conversation(Result, frozen=True):
    conv: ConversationInfo


class Changed(Result, frozen=True):
    """The result of a group op: the system event it appended to the conversation."""

    conv: ConversationId
    seq: Seq
    stream: StreamPos


class MemberInfo(Result, frozen=True):
    user_id: UserId
    role: Role
    muted: bool
    joined_seq: Seq


class Members(Result, frozen=True):
    conv: ConversationId
    members: list[MemberInfo]
    next_after: int | None


ContactState = Literal["requested", "pending", "accepted", "declined", "blocked", "none"]


class ContactInfo(Result, frozen=True):
    user_id: UserId
    state: ContactState
    display_name: str
    note: str
    updated_at: Timestamp


class Contact(Result, frozen=True):
    contact: ContactInfo


class Contacts(Result, frozen=True):
    contacts: list[ContactInfo]


class QrToken(Result, frozen=True):
    token: str
    expires_at: Timestamp


class GroupCreated(Result, frozen=True):
    conv: ConversationInfo
    seq: Seq
    stream: StreamPos
    duplicate: bool


#: The shape of ``ok.result`` for every core op (``protocol.catalog`` has them all).
CORE_RESULT_TYPES: dict[type[rq.Request], type[Result]] = {
    rq.Hello: HelloResult,
    rq.Auth: Session,
    rq.LoginRequestCode: CodeSent,
    rq.LoginVerify: Tokens,
    rq.TokenRefresh: Tokens,
    rq.Ping: Pong,
    rq.LogoutAll: Done,
    rq.DevicesList: Devices,
    rq.ProfileSet: Done,
    rq.UsersGet: Users,
    rq.MsgSend: Sent,
    rq.MsgRecall: Recalled,
    rq.MsgHistory: History,
    rq.Sync: SyncPage,
    rq.Ack: Done,
    rq.Read: ReadDone,
    rq.ReceiptCounts: ReceiptCounts,
    rq.ReceiptMembers: ReceiptMembers,
    rq.DirectOpen: Conversation,
    rq.GroupCreate: GroupCreated,
    rq.GroupAdd: Changed,
    rq.GroupRemove: Changed,
    rq.GroupLeave: Changed,
    rq.GroupRename: Changed,
    rq.GroupSetRole: Changed,
    rq.GroupTransfer: Changed,
    rq.GroupMuteMember: Changed,
    rq.GroupMuteAll: Changed,
    rq.GroupSetHistory: Changed,
    rq.GroupInfo: Conversation,
    rq.GroupMembers: Members,
    rq.ContactsAdd: Contact,
    rq.ContactsRespond: Contact,
    rq.ContactsRemove: Contact,
    rq.ContactsBlock: Contact,
    rq.ContactsList: Contacts,
    rq.ContactsQr: QrToken,
    rq.PresenceSubscribe: Done,
    rq.Typing: Done,
    rq.SettingsSet: Done,
    rq.ConvMute: Done,
}
