"""Rows of ``cross.db`` and the records they become: column lists, lookups by key, mapping.

Shared by the store's reads (``cross.py``) and its append transaction (``cross_append.py``).
Statements are built once here: the connection's statement cache keys on the SQL text.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.records import Conversation, Entry, Member

CONVERSATION_COLUMNS = (
    "c.conv_id, c.kind, c.title, c.owner_id, c.created_at, c.member_limit, c.mute_all,"
    " c.history_visible, c.last_seq, c.last_stream, c.member_count"
)
#: The membership with its earlier ranges (``Member.earlier``), "first-last" pairs joined by
#: commas: one probe of the member_ranges primary key, which finds nothing for all but the
#: members who were added back to a group that hides its history.
MEMBER_COLUMNS = (
    "m.conv_id, m.user_id, m.role, m.muted, m.visible_from, m.left_seq, m.read_seq,"
    " (SELECT group_concat(r.visible_from || '-' || r.left_seq) FROM member_ranges AS r"
    " WHERE r.conv_id = m.conv_id AND r.user_id = m.user_id)"
)
ENTRY_COLUMNS = (
    "e.stream, e.conv_id, e.seq, e.ref_seq, e.kind, e.sender, e.ts, e.cmid, e.body, e.recalled_by"
)
SELECT_CONVERSATION = f"SELECT {CONVERSATION_COLUMNS} FROM conversations AS c"
SELECT_MEMBER = f"SELECT {MEMBER_COLUMNS} FROM members AS m"
SELECT_ENTRY = f"SELECT {ENTRY_COLUMNS} FROM entries AS e"
# Lookups by key, on the append path too.
CONVERSATION_BY_ID = f"{SELECT_CONVERSATION} WHERE c.conv_id = ?"
MEMBER_BY_KEY = f"{SELECT_MEMBER} WHERE m.conv_id = ? AND m.user_id = ?"
ENTRY_BY_STREAM = f"{SELECT_ENTRY} WHERE e.stream = ?"


def fetch_conversation(conn: sqlite3.Connection, conv_id: str) -> Conversation | None:
    row = conn.execute(CONVERSATION_BY_ID, (conv_id,)).fetchone()
    return None if row is None else conversation_of(row)


def fetch_member(conn: sqlite3.Connection, conv_id: str, user_id: int) -> Member | None:
    row = conn.execute(MEMBER_BY_KEY, (conv_id, user_id)).fetchone()
    return None if row is None else member_of(row)


def fetch_entry_at_stream(conn: sqlite3.Connection, stream: int) -> Entry:
    row = conn.execute(ENTRY_BY_STREAM, (stream,)).fetchone()
    return entry_of(row)


def conversation_of(row: Any) -> Conversation:
    (
        conv_id,
        kind,
        title,
        owner_id,
        created_at,
        member_limit,
        mute_all,
        history_visible,
        last_seq,
        last_stream,
        member_count,
    ) = row
    return Conversation(
        conv_id=conv_id,
        kind=kind,
        title=title,
        owner_id=owner_id,
        created_at=created_at,
        member_limit=member_limit,
        mute_all=bool(mute_all),
        history_visible=bool(history_visible),
        last_seq=last_seq,
        last_stream=last_stream,
        member_count=member_count,
    )


def member_of(row: Any) -> Member:
    conv_id, user_id, role, muted, visible_from, left_seq, read_seq, earlier = row
    return Member(
        conv_id=conv_id,
        user_id=user_id,
        role=role,
        muted=bool(muted),
        visible_from=visible_from,
        left_seq=left_seq,
        read_seq=read_seq,
        earlier=() if earlier is None else _ranges(earlier),
    )


def _ranges(joined: str) -> tuple[tuple[int, int], ...]:
    """``member_ranges`` rows as ``group_concat`` joined them, ascending (the order of an
    aggregate's input is not promised)."""
    pairs = (pair.split("-") for pair in joined.split(","))
    return tuple(sorted((int(first), int(last)) for first, last in pairs))


def entry_of(row: Any) -> Entry:
    stream, conv_id, seq, ref_seq, kind, sender, ts, cmid, body, recalled_by = row
    return Entry(
        stream=stream,
        conv_id=conv_id,
        seq=ref_seq if seq is None else seq,
        kind=kind,
        sender=sender,
        ts=ts,
        cmid=cmid,
        body=body,
        recalled=recalled_by is not None,
    )
