"""Every request a client can send: one frozen Struct per op, tagged by ``op``.

A request is a MessagePack map ``{"op": "<name>", "rid": <int>, ...fields}``. ``rid`` is the
client's request id; the server answers each request with exactly one ``ok`` or ``error``
reply carrying the same ``rid``.

Unknown fields are ignored (so later protocol versions can add optional fields); unknown ops
are refused with ``unknown_op``. Every field is validated at decode.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from protocol import limits
from protocol.types import (
    AssignableRole,
    ClientMessageId,
    ContentKind,
    ConversationId,
    LoginCode,
    Name,
    OrgId,
    PageLimit,
    Phone,
    RequestId,
    Seq,
    SeqList,
    Text,
    Token,
    UserId,
    UserList,
)


class FileRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """A file or image by reference: Rivet stores metadata only, never the blob."""

    ref: Annotated[str, Meta(min_length=1, max_length=limits.MAX_TOKEN_CHARS)]
    name: Name
    mime: Annotated[str, Meta(min_length=1, max_length=limits.MAX_NAME_CHARS)]
    size: Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
    width: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    height: Annotated[int, Meta(ge=0, le=100_000)] | None = None


class Content(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What a user writes: text plus structured parts."""

    kind: ContentKind = "text"
    text: Text = ""
    mentions: UserList = msgspec.field(default_factory=list)
    mention_all: bool = False
    reply_to: Seq | None = None
    file: FileRef | None = None


class Request(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="op", forbid_unknown_fields=False
):
    rid: RequestId


# --- handshake and identity (allowed before authentication) ------------------------------


class Hello(Request, tag="hello", frozen=True):
    """First frame on every connection. With ``token`` it also authenticates."""

    version: Annotated[int, Meta(ge=0, le=1_000)]
    token: Token | None = None


class Auth(Request, tag="auth", frozen=True):
    token: Token


class LoginRequestCode(Request, tag="login.request_code", frozen=True):
    phone: Phone


class LoginVerify(Request, tag="login.verify", frozen=True):
    """Exchange a one-time code for tokens; registers a new device and authenticates."""

    phone: Phone
    code: LoginCode
    device_name: Name = "device"
    display_name: Name | None = None


class TokenRefresh(Request, tag="token.refresh", frozen=True):
    refresh_token: Token


class Ping(Request, tag="ping", frozen=True):
    pass


# --- sessions and profile -----------------------------------------------------------------


class LogoutAll(Request, tag="logout_all", frozen=True):
    """A2: revoke every session of the caller and close all their connections."""


class DevicesList(Request, tag="devices.list", frozen=True):
    pass


class ProfileSet(Request, tag="profile.set", frozen=True):
    display_name: Name


class UsersGet(Request, tag="users.get", frozen=True):
    user_ids: UserList


# --- messages and sync ----------------------------------------------------------------------


class MsgSend(Request, tag="msg.send", frozen=True):
    conv: ConversationId
    cmid: ClientMessageId
    content: Content


class MsgRecall(Request, tag="msg.recall", frozen=True):
    conv: ConversationId
    seq: Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]


class MsgHistory(Request, tag="msg.history", frozen=True):
    """Page backwards from ``before_seq`` (exclusive; omitted = from the newest)."""

    conv: ConversationId
    before_seq: Seq | None = None
    limit: PageLimit = limits.DEFAULT_PAGE


class Sync(Request, tag="sync", frozen=True):
    """Catch up. Without ``token``: summaries of every conversation and the current token.
    With one: summaries of the conversations changed since it (when ``summary``) and one page
    of the events after it. Repeat with the returned token while ``more`` is true."""

    token: Token | None = None
    summary: bool = True
    limit: PageLimit = limits.DEFAULT_PAGE


class Ack(Request, tag="ack", frozen=True):
    """The device has received everything up to this sync token."""

    token: Token


class Read(Request, tag="read", frozen=True):
    """Mark the conversation read up to and including ``seq``."""

    conv: ConversationId
    seq: Seq


class ReceiptCounts(Request, tag="receipts.counts", frozen=True):
    conv: ConversationId
    seqs: SeqList


class ReceiptMembers(Request, tag="receipts.members", frozen=True):
    """Who has (``read`` true) or has not read message ``seq``, paged by user id."""

    conv: ConversationId
    seq: Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
    read: bool = True
    after_user: Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)] = 0
    limit: PageLimit = limits.DEFAULT_PAGE


class DirectOpen(Request, tag="direct.open", frozen=True):
    """The single chat with ``peer`` (or with oneself when ``peer`` is the caller)."""

    peer: UserId


# --- groups ---------------------------------------------------------------------------------


class GroupCreate(Request, tag="group.create", frozen=True):
    cmid: ClientMessageId
    title: Name
    members: UserList = msgspec.field(default_factory=list)
    history_visible: bool = False
    #: D2: create the group in this organisation's store, as an organisation-internal
    #: group (id ``o:<org>:g:<n>``): the creator and every member must be enterprise
    #: accounts of that organisation. Without it the group is cross-domain.
    org: OrgId | None = None


class GroupAdd(Request, tag="group.add", frozen=True):
    conv: ConversationId
    users: Annotated[list[UserId], Meta(min_length=1, max_length=limits.MAX_USERS_PER_REQUEST)]


class GroupRemove(Request, tag="group.remove", frozen=True):
    conv: ConversationId
    user: UserId


class GroupLeave(Request, tag="group.leave", frozen=True):
    conv: ConversationId


class GroupRename(Request, tag="group.rename", frozen=True):
    conv: ConversationId
    title: Name


class GroupSetRole(Request, tag="group.set_role", frozen=True):
    conv: ConversationId
    user: UserId
    role: AssignableRole


class GroupTransfer(Request, tag="group.transfer", frozen=True):
    conv: ConversationId
    user: UserId


class GroupMuteMember(Request, tag="group.mute_member", frozen=True):
    conv: ConversationId
    user: UserId
    muted: bool


class GroupMuteAll(Request, tag="group.mute_all", frozen=True):
    conv: ConversationId
    muted: bool


class GroupSetHistory(Request, tag="group.set_history", frozen=True):
    """Whether members added from now on see the history before their joining point."""

    conv: ConversationId
    visible: bool


class GroupInfo(Request, tag="group.info", frozen=True):
    conv: ConversationId


class GroupMembers(Request, tag="group.members", frozen=True):
    conv: ConversationId
    after_user: Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)] = 0
    limit: PageLimit = limits.DEFAULT_PAGE


# --- contacts (M5) --------------------------------------------------------------------------


class ContactsAdd(Request, tag="contacts.add", frozen=True):
    """Ask to add a contact by exactly one of phone, user id or QR token."""

    cmid: ClientMessageId
    phone: Phone | None = None
    user_id: UserId | None = None
    qr_token: Token | None = None
    note: Annotated[str, Meta(max_length=limits.MAX_NAME_CHARS)] = ""


class ContactsRespond(Request, tag="contacts.respond", frozen=True):
    user: UserId
    accept: bool


class ContactsRemove(Request, tag="contacts.remove", frozen=True):
    user: UserId


class ContactsBlock(Request, tag="contacts.block", frozen=True):
    user: UserId
    blocked: bool


class ContactsList(Request, tag="contacts.list", frozen=True):
    pass


class ContactsQr(Request, tag="contacts.qr", frozen=True):
    """A short-lived token another user can scan to send a contact request."""


# --- ephemeral: presence and typing -----------------------------------------------------------


class PresenceSubscribe(Request, tag="presence.subscribe", frozen=True):
    """Replace the set of members of group ``conv`` whose presence (and typing) this
    connection is shown; users who are not current members are ignored. Contacts and
    single-chat peers are always shown without subscribing. An empty list unsubscribes."""

    conv: ConversationId
    users: UserList


class Typing(Request, tag="typing", frozen=True):
    conv: ConversationId


# --- notification preferences (M3) ------------------------------------------------------------


class SettingsSet(Request, tag="settings.set", frozen=True):
    notifications: bool


class ConvMute(Request, tag="conv.mute", frozen=True):
    conv: ConversationId
    muted: bool


#: The core ops; ``protocol.catalog.AnyRequest`` adds the feature modules' ops.
CoreRequest = (
    Hello
    | Auth
    | LoginRequestCode
    | LoginVerify
    | TokenRefresh
    | Ping
    | LogoutAll
    | DevicesList
    | ProfileSet
    | UsersGet
    | MsgSend
    | MsgRecall
    | MsgHistory
    | Sync
    | Ack
    | Read
    | ReceiptCounts
    | ReceiptMembers
    | DirectOpen
    | GroupCreate
    | GroupAdd
    | GroupRemove
    | GroupLeave
    | GroupRename
    | GroupSetRole
    | GroupTransfer
    | GroupMuteMember
    | GroupMuteAll
    | GroupSetHistory
    | GroupInfo
    | GroupMembers
    | ContactsAdd
    | ContactsRespond
    | ContactsRemove
    | ContactsBlock
    | ContactsList
    | ContactsQr
    | PresenceSubscribe
    | Typing
    | SettingsSet
    | ConvMute
)

#: Ops a connection may send before it is authenticated.
PRE_AUTH_OPS: frozenset[type[Request]] = frozenset(
    {Hello, Auth, LoginRequestCode, LoginVerify, TokenRefresh, Ping}
)
