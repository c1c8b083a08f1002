"""Conversation ids: deterministic for single chats and chat with oneself, and naming the
store that keeps the conversation.

A single chat between two users has exactly one id, whoever opens it first, so two devices
racing to start the same chat land in the same conversation.

D2/D3: an id that starts with ``o:<organisation id>:`` names an organisation-internal
conversation (a single chat or group among one organisation's enterprise accounts), kept in
that organisation's store; every other id names a cross-domain conversation. The id alone
says which store holds a conversation, so routing a request never needs a lookup.
"""

from typing import Literal

ConversationKind = Literal["direct", "self", "group"]


def direct_conversation_id(user_a: int, user_b: int) -> str:
    """The one id of the cross-domain single chat between two different users."""
    if user_a == user_b:
        return self_conversation_id(user_a)
    low, high = sorted((user_a, user_b))
    return f"d:{low}:{high}"


def self_conversation_id(user_id: int) -> str:
    """The id of a user's chat with themself (M1)."""
    return f"s:{user_id}"


def group_conversation_id(number: int) -> str:
    return f"g:{number}"


def org_direct_conversation_id(org_id: int, user_a: int, user_b: int) -> str:
    """D2: the one id of the single chat between two enterprise accounts of ``org_id``."""
    return org_conversation_prefix(org_id) + direct_conversation_id(user_a, user_b)


def org_group_conversation_id(org_id: int, number: int) -> str:
    """D2: an organisation-internal group of ``org_id``."""
    return org_conversation_prefix(org_id) + group_conversation_id(number)


def org_conversation_prefix(org_id: int) -> str:
    """What every id of ``org_id``'s own conversations starts with."""
    return f"o:{org_id}:"


def conversation_org(conversation_id: str) -> int | None:
    """The organisation whose store keeps the conversation, or None for cross-domain."""
    if not conversation_id.startswith("o:"):
        return None
    return int(conversation_id.split(":", 2)[1])


def _local(conversation_id: str) -> str:
    """The id without its organisation prefix."""
    if conversation_id.startswith("o:"):
        return conversation_id.split(":", 2)[2]
    return conversation_id


def conversation_kind(conversation_id: str) -> ConversationKind:
    local = _local(conversation_id)
    prefix = local[:2]
    if prefix == "d:":
        return "direct"
    if prefix == "s:" and local is conversation_id:
        return "self"
    if prefix == "g:":
        return "group"
    raise ValueError(f"not a conversation id: {conversation_id!r}")


def direct_participants(conversation_id: str) -> tuple[int, int]:
    """The two users of a single chat id (both the same for chat with oneself)."""
    kind = conversation_kind(conversation_id)
    parts = _local(conversation_id).split(":")
    if kind == "direct":
        return int(parts[1]), int(parts[2])
    if kind == "self":
        return int(parts[1]), int(parts[1])
    raise ValueError(f"not a single chat: {conversation_id!r}")
