"""The policy module: every authorisation decision, who receives each event, and which
store keeps it, in one place a reader can audit (rule D5, house habit 3).

Functions here are pure: they take the records the services loaded and either return a
decision or raise ``ProtocolError``. Services never decide on their own; they ask here.

A conversation the caller cannot see is reported exactly like one that does not exist
(``not_found``), so probing never reveals whether it exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import conversation_kind, direct_conversation_id, direct_participants
from protocol.requests import Content
from storage.records import Conversation, Entry, Member, RoleName

RECALL_WINDOW_MS: Final = 24 * 3600 * 1000

GroupAction = Literal[
    "add", "remove", "rename", "set_role", "transfer", "mute_member", "mute_all", "set_history"
]

#: Who may do each group action (M1, M2). Owners can do everything; admins manage
#: ordinary members; members may invite others.
_GROUP_ACTION_ROLES: Final[dict[GroupAction, frozenset[RoleName]]] = {
    "add": frozenset({"owner", "admin", "member"}),
    "remove": frozenset({"owner", "admin"}),
    "rename": frozenset({"owner", "admin"}),
    "set_role": frozenset({"owner"}),
    "transfer": frozenset({"owner"}),
    "mute_member": frozenset({"owner", "admin"}),
    "mute_all": frozenset({"owner", "admin"}),
    "set_history": frozenset({"owner", "admin"}),
}

_RANK: Final[dict[RoleName, int]] = {"owner": 2, "admin": 1, "member": 0}


def not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such conversation")


# --- single chats and chat with oneself -------------------------------------------------------


def direct_peer(caller: int, conv_id: str) -> int:
    """The other participant of a single chat id the caller is part of (the caller for chat
    with oneself). Any other id, or a non-canonical one, is not found."""
    kind = conversation_kind(conv_id)
    if kind == "group":
        raise ValueError("not a single chat")
    low, high = direct_participants(conv_id)
    if caller not in (low, high) or direct_conversation_id(low, high) != conv_id:
        raise not_found()
    return high if caller == low else low


def may_open_direct(*, peer_exists: bool) -> None:
    if not peer_exists:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")


# --- seeing and writing into a conversation ---------------------------------------------------


def may_read(member: Member | None) -> Member:
    """Reading history, receipts or info needs a membership, current or past (a departed
    member still sees what they saw while in the group)."""
    if member is None:
        raise not_found()
    return member


def may_write(member: Member | None) -> Member:
    """Writing (read positions, leaving) needs a current membership."""
    if member is None or not member.active:
        raise not_found()
    return member


def may_send(
    *, conversation: Conversation | None, member: Member | None, blocked_by_peer: bool
) -> None:
    """Sending a message (M1): a current member; in groups not muted and not under mute-all
    unless owner or admin; in single chats not blocked by the peer (M5)."""
    if conversation is not None and conversation.kind == "group":
        member = may_write(member)
        if member.muted:
            raise ProtocolError(ErrorCode.MUTED, "you are muted in this group")
        if conversation.mute_all and member.role == "member":
            raise ProtocolError(ErrorCode.MUTED, "the group is muted")
        return
    if conversation is not None:
        may_write(member)
    if blocked_by_peer:
        raise ProtocolError(ErrorCode.BLOCKED, "the recipient does not accept your messages")


def check_content(content: Content) -> None:
    """A message says something: text has text; a file or image names its file."""
    if content.kind == "text" and not content.text.strip() and content.file is None:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "a text message needs text", path="$.content.text"
        )
    if content.kind in ("file", "image") and content.file is None:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"a {content.kind} message needs a file", path="$.content.file"
        )


def may_mention(conversation: Conversation, member: Member, *, mention_all: bool) -> None:
    """@all is for the group's owner and admins."""
    if mention_all and (conversation.kind != "group" or member.role == "member"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "only owners and admins may mention everyone")


def may_recall(*, caller: int, member: Member | None, entry: Entry | None, now: int) -> None:
    """M4: senders within 24 hours; a group's owner and admins at any time (O1 applies to
    organisation scopes, which a later issue adds)."""
    member = may_write(member)
    if entry is None or entry.kind != "message":
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such message")
    if member.role in ("owner", "admin") and entry.conv_id.startswith("g:"):
        return
    if entry.sender != caller:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the sender or a group admin may recall")
    if now - entry.ts > RECALL_WINDOW_MS:
        raise ProtocolError(ErrorCode.RECALL_WINDOW_PASSED)


# --- groups -----------------------------------------------------------------------------------


def may_manage(
    action: GroupAction, *, conversation: Conversation | None, actor: Member | None
) -> tuple[Conversation, Member]:
    if conversation is None or conversation.kind != "group":
        raise not_found()
    actor = may_write(actor)
    if actor.role not in _GROUP_ACTION_ROLES[action]:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"your role may not {action.replace('_', ' ')}")
    return conversation, actor


def may_act_on(actor: Member, target: Member | None) -> Member:
    """Acting on another member (remove, mute, role) needs a strictly higher rank."""
    if target is None or not target.active:
        raise ProtocolError(ErrorCode.NOT_MEMBER)
    if _RANK[actor.role] <= _RANK[target.role]:
        raise ProtocolError(ErrorCode.FORBIDDEN, "you may not act on a member of equal rank")
    return target


def may_leave(member: Member | None) -> Member:
    member = may_write(member)
    if member.role == "owner":
        raise ProtocolError(ErrorCode.INVALID_STATE, "transfer ownership before leaving")
    return member


def may_admit(conversation: Conversation, *, adding: int) -> None:
    """M2: a group admits members up to its member limit."""
    if conversation.member_count + adding > conversation.member_limit:
        raise ProtocolError(
            ErrorCode.MEMBER_LIMIT, f"the group allows {conversation.member_limit} members"
        )


# --- who receives what ---------------------------------------------------------------------------


def entry_recipients(
    conversation: Conversation, entry: Entry, members: Iterable[int], *, departed: Iterable[int]
) -> set[int]:
    """Who receives a conversation entry live (D5).

    Messages, system entries and recalls go to every current member; the users a system
    entry removes also receive that entry (it is the last one they see). Read positions go to
    the reader and, outside groups, to the peer (a read receipt); in groups, senders get
    coalesced read counts instead.
    """
    if entry.kind == "read":
        if conversation.kind == "group":
            return {entry.sender}
        return set(members) | {entry.sender}
    return set(members) | set(departed)


def presence_audience(*, contacts: Iterable[int], direct_peers: Iterable[int]) -> set[int]:
    """Presence goes to accepted contacts and single-chat peers; group members see it only
    when they subscribe to the members they are showing (no fan-out to every group)."""
    return set(contacts) | set(direct_peers)


def store_for(conv_id: str) -> Literal["cross"]:
    """Which store keeps a conversation (D3): single chats, ordinary groups and chat with
    oneself are cross-domain. Organisation-internal conversations (D2) join later."""
    conversation_kind(conv_id)
    return "cross"
