"""The append transaction of ``cross.db``: an entry with its effects, atomically.

``append_entry`` follows the steps of ``CrossDomainStore.append`` in order; it runs in the
writer thread inside its own savepoint, so any exception leaves nothing behind. The common
path (a message to an existing conversation, with an idempotency key and a membership
precondition) is six constant, cached statements: key lookup, conversation with the
membership check, entry insert, sender's read position, conversation update, key insert.
"""

from __future__ import annotations

import sqlite3

from msgspec.structs import replace

from storage.errors import ConversationMissing, IdempotencyConflict, NotAMember
from storage.records import (
    Appended,
    Conversation,
    ConversationChange,
    Entry,
    EntryKind,
    IdempotencyKey,
    MemberChange,
    NewConversation,
    NewEntry,
)
from storage.sqlite.cross_rows import (
    CONVERSATION_COLUMNS,
    conversation_of,
    fetch_conversation,
    fetch_entry_at_stream,
    fetch_member,
)

#: The conversation, and whether the user is a current member of it (``Member.active``).
_CONVERSATION_AND_MEMBERSHIP = f"""
    SELECT {CONVERSATION_COLUMNS}, m.user_id IS NOT NULL AND m.left_seq IS NULL
    FROM conversations AS c
    LEFT JOIN members AS m ON m.conv_id = c.conv_id AND m.user_id = ?
    WHERE c.conv_id = ?
"""


def recorded_write(conn: sqlite3.Connection, key: IdempotencyKey) -> Appended | None:
    """The write recorded under ``key`` as a duplicate ``Appended``, or None."""
    recorded = conn.execute(
        "SELECT fingerprint, stream FROM idempotency WHERE sender = ? AND client_id = ?",
        (key.sender, key.client_id),
    ).fetchone()
    if recorded is None:
        return None
    if recorded[0] != key.fingerprint:
        raise IdempotencyConflict("idempotency key reused for a different request")
    first = fetch_entry_at_stream(conn, recorded[1])
    current = fetch_conversation(conn, first.conv_id)
    assert current is not None
    return Appended(entry=first, conversation=current, duplicate=True)


def append_entry(conn: sqlite3.Connection, entry: NewEntry) -> Appended:
    key = entry.idempotency
    if key is not None:
        found = recorded_write(conn, key)
        if found is not None:
            return found

    conv_id = entry.conv_id
    if entry.require_member is not None:
        # The conversation and the membership precondition in one statement.
        row = conn.execute(_CONVERSATION_AND_MEMBERSHIP, (entry.require_member, conv_id)).fetchone()
        conversation = None if row is None else conversation_of(row[:-1])
        is_member = row is not None and bool(row[-1])
    else:
        conversation = fetch_conversation(conn, conv_id)
    if conversation is None:
        if entry.create is None:
            raise ConversationMissing("conversation does not exist")
        conversation = _create(conn, entry.create, now=entry.ts)
        if entry.require_member is not None:
            required = fetch_member(conn, conv_id, entry.require_member)
            is_member = required is not None and required.active
    if entry.require_member is not None and not is_member:
        raise NotAMember("user is not a current member")

    seq = conversation.last_seq + 1
    cursor = conn.execute(
        "INSERT INTO entries (conv_id, seq, kind, sender, ts, cmid, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (conv_id, seq, entry.kind, entry.sender, entry.ts, entry.cmid, entry.body),
    )
    assert cursor.lastrowid is not None
    stored = Entry(
        stream=cursor.lastrowid,
        conv_id=conv_id,
        seq=seq,
        kind=entry.kind,
        sender=entry.sender,
        ts=entry.ts,
        cmid=entry.cmid,
        body=entry.body,
    )
    member_count = conversation.member_count
    for change in entry.member_changes:
        member_count += _apply_member_change(conn, conv_id, change, seq=seq)
    if entry.kind == "message":
        # The sender has read what they wrote, if they can see it.
        conn.execute(
            "UPDATE members SET read_seq = ?1 WHERE conv_id = ?2 AND user_id = ?3"
            " AND read_seq < ?1 AND visible_from <= ?1 AND (left_seq IS NULL OR left_seq >= ?1)",
            (seq, conv_id, entry.sender),
        )
    conversation = replace(
        _changed_conversation(conversation, entry.conversation_change),
        last_seq=seq,
        last_stream=stored.stream,
        member_count=member_count,
    )
    conn.execute(
        "UPDATE conversations SET title = ?, owner_id = ?, mute_all = ?, history_visible = ?,"
        " member_limit = ?, last_seq = ?, last_stream = ?, member_count = ? WHERE conv_id = ?",
        (
            conversation.title,
            conversation.owner_id,
            conversation.mute_all,
            conversation.history_visible,
            conversation.member_limit,
            seq,
            stored.stream,
            member_count,
            conv_id,
        ),
    )
    if key is not None:
        conn.execute(
            "INSERT INTO idempotency (sender, client_id, fingerprint, created_at, stream)"
            " VALUES (?, ?, ?, ?, ?)",
            (key.sender, key.client_id, key.fingerprint, entry.ts, stored.stream),
        )
    for kind in entry.effects:
        conn.execute("INSERT INTO effects (kind, stream) VALUES (?, ?)", (kind, stored.stream))
    return Appended(entry=stored, conversation=conversation)


def _create(conn: sqlite3.Connection, create: NewConversation, *, now: int) -> Conversation:
    """Insert the conversation and its first members, all visible from seq 1."""
    members = dict(create.members)
    conversation = Conversation(
        conv_id=create.conv_id,
        kind=create.kind,
        title=create.title,
        owner_id=create.owner_id,
        created_at=now,
        member_limit=create.member_limit,
        history_visible=create.history_visible,
        member_count=len(members),
    )
    conn.execute(
        "INSERT INTO conversations (conv_id, kind, title, owner_id, created_at, member_limit,"
        " history_visible, member_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            conversation.conv_id,
            conversation.kind,
            conversation.title,
            conversation.owner_id,
            now,
            conversation.member_limit,
            conversation.history_visible,
            conversation.member_count,
        ),
    )
    conn.executemany(
        "INSERT INTO members (conv_id, user_id, role, visible_from) VALUES (?, ?, ?, 1)",
        [(create.conv_id, user_id, role) for user_id, role in members.items()],
    )
    return conversation


def _apply_member_change(
    conn: sqlite3.Connection, conv_id: str, change: MemberChange, *, seq: int
) -> int:
    """Apply ``change`` made by the entry at ``seq``; returns how it moved member_count.
    Removing or updating someone who is not a current member changes nothing."""
    row = fetch_member(conn, conv_id, change.user_id)
    current = row is not None and row.active
    if change.op == "add" and not current:
        if row is not None:
            # M1: a former member keeps the range they saw (``Member.earlier``); seeing from
            # seq 1 again covers every earlier range, which then go.
            if change.history_from_start:
                conn.execute(
                    "DELETE FROM member_ranges WHERE conv_id = ? AND user_id = ?",
                    (conv_id, change.user_id),
                )
            else:
                conn.execute(
                    "INSERT INTO member_ranges (conv_id, user_id, visible_from, left_seq)"
                    " VALUES (?, ?, ?, ?)",
                    (conv_id, change.user_id, row.visible_from, row.left_seq),
                )
        conn.execute(
            "INSERT OR REPLACE INTO members"
            " (conv_id, user_id, role, muted, visible_from, left_seq, read_seq)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (
                conv_id,
                change.user_id,
                change.role or "member",
                bool(change.muted),
                1 if change.history_from_start else seq,
                # A re-admitted member keeps what they had read before they left.
                0 if row is None else row.read_seq,
            ),
        )
        return 1
    if not current:
        return 0
    if change.op == "remove":
        conn.execute(
            "UPDATE members SET left_seq = ? WHERE conv_id = ? AND user_id = ?",
            (seq, conv_id, change.user_id),
        )
        return -1
    # "update", or "add" of a current member: their visibility stays as it is.
    conn.execute(
        "UPDATE members SET role = coalesce(?, role), muted = coalesce(?, muted)"
        " WHERE conv_id = ? AND user_id = ?",
        (change.role, change.muted, conv_id, change.user_id),
    )
    return 0


def _changed_conversation(
    conversation: Conversation, change: ConversationChange | None
) -> Conversation:
    if change is None:
        return conversation
    return replace(
        conversation,
        title=conversation.title if change.title is None else change.title,
        owner_id=conversation.owner_id if change.owner_id is None else change.owner_id,
        mute_all=conversation.mute_all if change.mute_all is None else change.mute_all,
        history_visible=(
            conversation.history_visible
            if change.history_visible is None
            else change.history_visible
        ),
        member_limit=(
            conversation.member_limit if change.member_limit is None else change.member_limit
        ),
    )


def append_unsequenced(
    conn: sqlite3.Connection, conv_id: str, *, ref_seq: int, kind: EntryKind, sender: int, ts: int
) -> Entry:
    """Append a ``recall`` or ``read`` entry: a stream position but no seq of its own."""
    cursor = conn.execute(
        "INSERT INTO entries (conv_id, ref_seq, kind, sender, ts) VALUES (?, ?, ?, ?, ?)",
        (conv_id, ref_seq, kind, sender, ts),
    )
    assert cursor.lastrowid is not None
    conn.execute(
        "UPDATE conversations SET last_stream = ? WHERE conv_id = ?", (cursor.lastrowid, conv_id)
    )
    return Entry(
        stream=cursor.lastrowid, conv_id=conv_id, seq=ref_seq, kind=kind, sender=sender, ts=ts
    )
