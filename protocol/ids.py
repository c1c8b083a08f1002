"""Conversation ids: deterministic for single chats and chat with oneself.

A single chat between two users has exactly one id, whoever opens it first, so two devices
racing to start the same chat land in the same conversation.
"""

from typing import Literal

ConversationKind = Literal["direct", "self", "group"]


def direct_conversation_id(user_a: int, user_b: int) -> str:
    """The one id of the single chat between two different users."""
    if user_a == user_b:
        return self_conversation_id(user_a)
    low, high = sorted((user_a, user_b))
    return f"d:{low}:{high}"


def self_conversation_id(user_id: int) -> str:
    """The id of a user's chat with themself (M1)."""
    return f"s:{user_id}"


def group_conversation_id(number: int) -> str:
    return f"g:{number}"


def conversation_kind(conversation_id: str) -> ConversationKind:
    prefix = conversation_id[:2]
    if prefix == "d:":
        return "direct"
    if prefix == "s:":
        return "self"
    if prefix == "g:":
        return "group"
    raise ValueError(f"not a conversation id: {conversation_id!r}")


def direct_participants(conversation_id: str) -> tuple[int, int]:
    """The two users of a single chat id (both the same for chat with oneself)."""
    kind = conversation_kind(conversation_id)
    parts = conversation_id.split(":")
    if kind == "direct":
        return int(parts[1]), int(parts[2])
    if kind == "self":
        return int(parts[1]), int(parts[1])
    raise ValueError(f"not a single chat: {conversation_id!r}")
