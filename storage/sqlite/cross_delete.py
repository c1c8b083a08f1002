"""O4: deleting conversations by id prefix, a bounded batch per transaction.

Used by dissolution for an organisation's own conversations (``o:<org>:...``): entries go
first (with their pending effects and idempotency keys), then members (their earlier ranges
first), then the conversation row, so a batch cut short anywhere leaves a conversation the
next batch finds again by its row.
"""

from __future__ import annotations

import sqlite3


def prefix_range(id_prefix: str) -> tuple[str, str]:
    """The half-open range [low, high) of ids that start with ``id_prefix``."""
    if not id_prefix:
        raise ValueError("an empty prefix would name every conversation")
    return id_prefix, id_prefix[:-1] + chr(ord(id_prefix[-1]) + 1)


def delete_conversations(conn: sqlite3.Connection, id_prefix: str, limit: int) -> int:
    low, high = prefix_range(id_prefix)
    deleted = 0
    rows = conn.execute(
        "SELECT conv_id FROM conversations WHERE conv_id >= ? AND conv_id < ? ORDER BY conv_id",
        (low, high),
    ).fetchall()
    for (conv_id,) in rows:
        room = limit - deleted
        if room <= 0:
            break
        streams = [
            stream
            for (stream,) in conn.execute(
                "SELECT stream FROM entries WHERE conv_id = ? ORDER BY stream LIMIT ?",
                (conv_id, room),
            )
        ]
        if streams:
            marks = ",".join("?" * len(streams))
            conn.execute(f"DELETE FROM effects WHERE stream IN ({marks})", streams)
            conn.execute(f"DELETE FROM idempotency WHERE stream IN ({marks})", streams)
            conn.execute(f"DELETE FROM entries WHERE stream IN ({marks})", streams)
            deleted += len(streams)
            continue
        # The earlier ranges of rejoined members (M1) go with their membership rows.
        ranges = conn.execute(
            "DELETE FROM member_ranges WHERE conv_id = ? AND (user_id, visible_from) IN"
            " (SELECT user_id, visible_from FROM member_ranges WHERE conv_id = ? LIMIT ?)",
            (conv_id, conv_id, room),
        ).rowcount
        deleted += ranges
        room -= ranges
        if room <= 0:
            continue
        gone = conn.execute(
            "DELETE FROM members WHERE conv_id = ? AND user_id IN"
            " (SELECT user_id FROM members WHERE conv_id = ? LIMIT ?)",
            (conv_id, conv_id, room),
        ).rowcount
        deleted += gone
        if gone < room:
            conn.execute("DELETE FROM conversations WHERE conv_id = ?", (conv_id,))
            deleted += 1
    return deleted
