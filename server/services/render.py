"""Turn stored records into protocol events (and content into stored bodies)."""

from __future__ import annotations

import hashlib

import msgspec

from protocol import replies
from protocol.events import MessageEvent, ReadEvent, RecallEvent, SyncEvent, SystemInfo
from protocol.ids import conversation_kind
from protocol.requests import Content
from storage.records import Conversation, Entry, Member, Summary

_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(Content)
_system_decoder = msgspec.msgpack.Decoder(SystemInfo)


def content_body(content: Content) -> bytes:
    return _encoder.encode(content)


def system_body(info: SystemInfo) -> bytes:
    return _encoder.encode(info)


def fingerprint(*parts: bytes | str) -> bytes:
    """What an idempotency key is bound to: a resend must match it exactly."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.digest()


def message_event(entry: Entry, *, content: Content | None = None) -> MessageEvent:
    """A ``message`` or ``system`` entry as the event clients see. ``content``: what the
    entry's body encodes (``content_body``), when the caller still has it: a message just
    sent, whose body need not be decoded again."""
    system = None
    if content is not None:
        assert entry.kind == "message" and not entry.recalled
    elif entry.body is not None and not entry.recalled:
        if entry.kind == "system":
            system = _system_decoder.decode(entry.body)
        else:
            content = _content_decoder.decode(entry.body)
    return MessageEvent(
        stream=entry.stream,
        conv=entry.conv_id,
        seq=entry.seq,
        msg_id=entry.stream,
        sender=entry.sender,
        ts=entry.ts,
        cmid=entry.cmid,
        content=content,
        system=system,
        recalled=entry.recalled,
    )


def entry_event(entry: Entry, *, unread: int | None = None) -> SyncEvent:
    if entry.kind == "recall":
        return RecallEvent(
            stream=entry.stream, conv=entry.conv_id, seq=entry.seq, by=entry.sender, ts=entry.ts
        )
    if entry.kind == "read":
        return ReadEvent(
            stream=entry.stream, conv=entry.conv_id, user=entry.sender, seq=entry.seq, unread=unread
        )
    return message_event(entry)


def conversation_info(conversation: Conversation) -> replies.ConversationInfo:
    return replies.ConversationInfo(
        conv=conversation.conv_id,
        kind=conversation.kind,
        title=conversation.title,
        owner=conversation.owner_id,
        created_at=conversation.created_at,
        member_count=conversation.member_count,
        member_limit=conversation.member_limit,
        mute_all=conversation.mute_all,
        history_visible=conversation.history_visible,
        last_seq=conversation.last_seq,
    )


def summary(item: Summary, *, muted: bool) -> replies.ConversationSummary:
    member: Member = item.member
    last_seq = item.conversation.last_seq
    if member.left_seq is not None:
        last_seq = member.left_seq
    return replies.ConversationSummary(
        conv=item.conversation.conv_id,
        kind=conversation_kind(item.conversation.conv_id),
        title=item.conversation.title,
        last_seq=last_seq,
        read_seq=member.read_seq,
        unread=item.unread,
        muted=muted,
        last_message=message_event(item.last_message) if item.last_message else None,
        left=member.left_seq is not None,
    )
