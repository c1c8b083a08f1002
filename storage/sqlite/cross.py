"""The SQLite cross-domain store (D3), in ``cross.db``: implements ``CrossDomainStore``.

Every method is one named transaction: writes through the database's writer thread (group
commit, durable before they return), reads on the reader pool in one snapshot.

Schema (``migrations/cross/``): ``message``/``system`` entries carry their own ``seq`` under a
unique (conv_id, seq) index; ``recall``/``read`` entries leave ``seq`` NULL and name their
message or read position in ``ref_seq``. Receipts are counted from members' read positions
(index on (conv_id, read_seq)), never from a row per message per member, so a group of
10,000 costs one row per member. The earlier ranges of a member added back to a group that
hides its history are rows of ``member_ranges`` (``Member.earlier``); the visibility rule
probes them only for a seq before the member's current range, and finds none for everyone
else. The append transaction is in ``cross_append.py``; the column lists and row mapping
shared by both are in ``cross_rows.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from msgspec.structs import replace

from storage.errors import ConversationMissing, NotAMember
from storage.records import (
    Appended,
    Conversation,
    Entry,
    IdempotencyKey,
    Member,
    NewEntry,
    PendingEffect,
    ReadCount,
    ReadMoved,
    Recall,
    Summary,
)
from storage.sqlite.cross_append import append_entry, append_unsequenced, recorded_write
from storage.sqlite.cross_delete import delete_conversations, prefix_range
from storage.sqlite.cross_rows import (
    CONVERSATION_BY_ID,
    CONVERSATION_COLUMNS,
    ENTRY_COLUMNS,
    MEMBER_BY_KEY,
    MEMBER_COLUMNS,
    SELECT_ENTRY,
    SELECT_MEMBER,
    conversation_of,
    entry_of,
    fetch_entry_at_stream,
    fetch_member,
    member_of,
)
from storage.sqlite.database import Database

#: Stands for "no upper bound" in seq ranges (SQLite integers are 64-bit).
_NO_BOUND = 2**62

# entries_for, one statement: the user's memberships in conversations changed after the
# position, each conversation's entries after it in stream order (the (conv_id, stream) index),
# those that pass the visibility rule of ``CrossDomainStore`` (the seq an entry shows, its own
# or the one it names, lies in the member's window, or before it in one of their earlier
# windows: a probe of member_ranges made only for seqs before the current window; ``read``
# entries in a group are private to their writer: in a single chat the peer's position is the
# receipt), the first ``limit`` by stream. SQLite's ORDER BY ... LIMIT keeps only ``limit``
# rows and leaves a conversation's index range as soon as its next entry sorts after all of
# them, so the rows read stay about the limit per changed conversation however long the
# histories behind them (this replaced a cursor per conversation merged in Python: a
# statement per conversation, and the merge).
_VISIBLE_ENTRIES_AFTER = f"""
    SELECT {ENTRY_COLUMNS}
    FROM members AS m
    CROSS JOIN conversations AS c ON c.conv_id = m.conv_id
    CROSS JOIN entries AS e ON e.conv_id = m.conv_id
    WHERE m.user_id = :user_id AND c.last_stream > :after AND e.stream > :after
      AND (
        coalesce(e.seq, e.ref_seq) >= m.visible_from
          AND (m.left_seq IS NULL OR coalesce(e.seq, e.ref_seq) <= m.left_seq)
        OR coalesce(e.seq, e.ref_seq) < m.visible_from AND EXISTS (
          SELECT 1 FROM member_ranges AS r
          WHERE r.conv_id = m.conv_id AND r.user_id = m.user_id
            AND r.visible_from <= coalesce(e.seq, e.ref_seq)
            AND r.left_seq >= coalesce(e.seq, e.ref_seq)
        )
      )
      AND (e.kind != 'read' OR e.sender = :user_id OR c.kind != 'group')
    ORDER BY e.stream
    LIMIT :limit
"""

_SUMMARY_ROWS = f"""
    SELECT {CONVERSATION_COLUMNS}, {MEMBER_COLUMNS}
    FROM members AS m
    CROSS JOIN conversations AS c ON c.conv_id = m.conv_id
    WHERE m.user_id = ? AND c.last_stream > ?
    ORDER BY c.last_stream DESC
"""

#: Whether the member ``m`` saw ``:seq`` in one of their earlier memberships (the
#: member_ranges rows of a member added back to a group that hides its history).
_SAW_EARLIER = """EXISTS (
    SELECT 1 FROM member_ranges AS r
    WHERE r.conv_id = m.conv_id AND r.user_id = m.user_id
      AND r.visible_from <= :seq AND r.left_seq >= :seq
)"""

# Current members other than the sender who see the message (in this membership's window
# or an earlier one) and have, or have not, read it.
_READERS = f"""
    SELECT user_id FROM members AS m
    WHERE conv_id = :conv_id AND left_seq IS NULL AND user_id > :after AND user_id != :sender
      AND (visible_from <= :seq OR {_SAW_EARLIER}) AND read_seq >= :seq
    ORDER BY user_id LIMIT :limit
"""
_NON_READERS = f"""
    SELECT user_id FROM members AS m
    WHERE conv_id = :conv_id AND left_seq IS NULL AND user_id > :after AND user_id != :sender
      AND (visible_from <= :seq OR {_SAW_EARLIER}) AND read_seq < :seq
    ORDER BY user_id LIMIT :limit
"""
#: Current members other than the sender who joined after ``:seq``, saw it in an earlier
#: membership and had read it (their read position stays across the gap).
_READ_EARLIER = f"""
    SELECT count(*) FROM members AS m INDEXED BY members_by_join
    WHERE conv_id = :conv_id AND left_seq IS NULL AND visible_from > :seq
      AND read_seq >= :seq AND user_id != :sender AND {_SAW_EARLIER}
"""
#: Current members who joined after ``:seq`` and did not see it earlier either (few, even in
#: a group of 10,000: found by the join index).
_JOINED_AFTER = f"""
    SELECT user_id FROM members AS m INDEXED BY members_by_join
    WHERE conv_id = :conv_id AND left_seq IS NULL AND visible_from > :seq
      AND NOT {_SAW_EARLIER}
"""
_LATE_COUNT = f"SELECT count(*) FROM ({_JOINED_AFTER})"
_SENDER_LATE = f"{_JOINED_AFTER} AND user_id = :sender"


class SqliteCrossDomainStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

    # writes

    async def append(self, entry: NewEntry) -> Appended:
        """``ValueError`` if ``entry.create`` names another conversation than ``entry``."""
        if entry.create is not None and entry.create.conv_id != entry.conv_id:
            raise ValueError("entry.create.conv_id must equal entry.conv_id")
        return await self._writer.run("append_entry", lambda conn: append_entry(conn, entry))

    async def recall(self, *, conv_id: str, seq: int, by: int, now: int) -> Recall:
        def recall(conn: sqlite3.Connection) -> Recall:
            row = conn.execute(f"{SELECT_ENTRY} WHERE e.conv_id = ? AND e.seq = ?", (conv_id, seq))
            message = row.fetchone()
            if message is None or message[4] != "message":
                raise ConversationMissing("no message at that seq")
            message_stream, recalled_by = message[0], message[9]
            if recalled_by is not None:
                return Recall(entry=fetch_entry_at_stream(conn, recalled_by), duplicate=True)
            # M4: the content goes, the seq stays so nobody's sequence has a hole.
            recall = append_unsequenced(
                conn, conv_id, ref_seq=seq, kind="recall", sender=by, ts=now
            )
            conn.execute(
                "UPDATE entries SET body = NULL, recalled_by = ? WHERE stream = ?",
                (recall.stream, message_stream),
            )
            return Recall(entry=recall)

        return await self._writer.run("recall_entry", recall)

    async def recorded(self, key: IdempotencyKey) -> Appended | None:
        def recorded(conn: sqlite3.Connection) -> Appended | None:
            return recorded_write(conn, key)

        return await self._readers.run("recorded", recorded)

    async def count_conversations(self, id_prefix: str) -> int:
        low, high = prefix_range(id_prefix)

        def count(conn: sqlite3.Connection) -> int:
            (n,) = conn.execute(
                "SELECT count(*) FROM conversations WHERE conv_id >= ? AND conv_id < ?",
                (low, high),
            ).fetchone()
            return int(n)

        return await self._readers.run("count_conversations", count)

    async def delete_conversations(self, id_prefix: str, *, limit: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return delete_conversations(conn, id_prefix, max(limit, 1))

        return await self._writer.run("delete_conversations", delete)

    async def erase_sender(self, user_id: int, *, now: int, limit: int) -> list[Entry]:
        def erase_sender(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                "SELECT stream, conv_id, seq FROM entries WHERE sender = ? AND kind = 'message'"
                " AND recalled_by IS NULL ORDER BY stream LIMIT ?",
                (user_id, max(limit, 0)),
            ).fetchall()
            recalls = []
            for stream, conv_id, seq in rows:
                recall = append_unsequenced(
                    conn, conv_id, ref_seq=seq, kind="recall", sender=user_id, ts=now
                )
                conn.execute(
                    "UPDATE entries SET body = NULL, recalled_by = ? WHERE stream = ?",
                    (recall.stream, stream),
                )
                recalls.append(recall)
            return recalls

        return await self._writer.run("erase_sender", erase_sender)

    async def mark_read(self, *, conv_id: str, user_id: int, seq: int, now: int) -> ReadMoved:
        def mark_read(conn: sqlite3.Connection) -> ReadMoved:
            member = fetch_member(conn, conv_id, user_id)
            if member is None or not member.active:
                raise NotAMember("user is not a current member")
            (last_seq,) = conn.execute(
                "SELECT last_seq FROM conversations WHERE conv_id = ?", (conv_id,)
            ).fetchone()
            target = min(seq, last_seq)
            if target <= member.read_seq:
                unread = _unread(conn, member, last_seq=last_seq)
                return ReadMoved(entry=None, read_seq=member.read_seq, unread=unread)
            conn.execute(
                "UPDATE members SET read_seq = ? WHERE conv_id = ? AND user_id = ?",
                (target, conv_id, user_id),
            )
            read = append_unsequenced(
                conn, conv_id, ref_seq=target, kind="read", sender=user_id, ts=now
            )
            unread = _unread(conn, replace(member, read_seq=target), last_seq=last_seq)
            return ReadMoved(entry=read, read_seq=target, unread=unread)

        return await self._writer.run("mark_read", mark_read)

    async def next_group_number(self) -> int:
        def next_group_number(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "UPDATE counters SET value = value + 1 WHERE name = 'group_number' RETURNING value"
            ).fetchall()
            return int(rows[0][0])

        return await self._writer.run("next_group_number", next_group_number)

    async def prune_idempotency(self, *, older_than: int) -> int:
        def prune_idempotency(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM idempotency WHERE created_at < ?", (older_than,))
            return cursor.rowcount

        return await self._writer.run("prune_cross_idempotency", prune_idempotency)

    async def finish_effect(self, effect_id: int) -> None:
        def finish_effect(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM effects WHERE effect_id = ?", (effect_id,))

        await self._writer.run("finish_effect", finish_effect)

    # reads

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingEffect]:
        def pending_effects(conn: sqlite3.Connection) -> list[PendingEffect]:
            rows = conn.execute(
                "SELECT effect_id, kind, stream FROM effects WHERE effect_id > ?"
                " ORDER BY effect_id LIMIT ?",
                (after, max(limit, 0)),
            ).fetchall()
            return [
                PendingEffect(effect_id=e, kind=k, entry=fetch_entry_at_stream(conn, s))
                for e, k, s in rows
            ]

        return await self._readers.run("pending_effects", pending_effects)

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        return await self._readers.lookup(
            "get_conversation", CONVERSATION_BY_ID, (conv_id,), conversation_of
        )

    async def get_member(self, conv_id: str, user_id: int) -> Member | None:
        return await self._readers.lookup(
            "get_member", MEMBER_BY_KEY, (conv_id, user_id), member_of
        )

    async def list_members(self, conv_id: str, *, after_user: int, limit: int) -> list[Member]:
        def list_members(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(
                f"{SELECT_MEMBER} WHERE m.conv_id = ? AND m.left_seq IS NULL AND m.user_id > ?"
                " ORDER BY m.user_id LIMIT ?",
                (conv_id, after_user, max(limit, 0)),
            )
            return [member_of(row) for row in rows]

        return await self._readers.run("list_members", list_members)

    async def member_ids(self, conv_id: str) -> list[int]:
        def member_ids(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT user_id FROM members WHERE conv_id = ? AND left_seq IS NULL"
                " ORDER BY user_id",
                (conv_id,),
            )
            return [user_id for (user_id,) in rows]

        return await self._readers.run("member_ids", member_ids)

    async def joined_after(self, conv_id: str, seq: int) -> list[int]:
        def joined_after(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(_JOINED_AFTER, {"conv_id": conv_id, "seq": seq})
            return sorted(user_id for (user_id,) in rows)

        return await self._readers.run("joined_after", joined_after)

    async def memberships(self, user_id: int) -> list[Member]:
        """Ascending by conversation id."""

        def memberships(conn: sqlite3.Connection) -> list[Member]:
            rows = conn.execute(
                f"{SELECT_MEMBER} WHERE m.user_id = ? ORDER BY m.conv_id", (user_id,)
            )
            return [member_of(row) for row in rows]

        return await self._readers.run("memberships", memberships)

    async def membership_ids(self, user_id: int) -> list[str]:
        def membership_ids(conn: sqlite3.Connection) -> list[str]:
            # From the members_by_user index alone (conv_id rides along as part of the key).
            rows = conn.execute(
                "SELECT conv_id FROM members WHERE user_id = ? ORDER BY conv_id", (user_id,)
            )
            return [conv_id for (conv_id,) in rows]

        return await self._readers.run("membership_ids", membership_ids)

    async def get_entry(self, conv_id: str, seq: int) -> Entry | None:
        def get_entry(conn: sqlite3.Connection) -> Entry | None:
            # Only message and system entries have a seq of their own.
            row = conn.execute(f"{SELECT_ENTRY} WHERE e.conv_id = ? AND e.seq = ?", (conv_id, seq))
            found = row.fetchone()
            return None if found is None else entry_of(found)

        return await self._readers.run("get_entry", get_entry)

    async def history(
        self,
        conv_id: str,
        *,
        visible_from: int,
        visible_to: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Entry]:
        if limit <= 0:
            return []
        high = _NO_BOUND if visible_to is None else visible_to
        if before_seq is not None:
            high = min(high, before_seq - 1)

        def history(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                f"{SELECT_ENTRY} WHERE e.conv_id = ? AND e.seq >= ? AND e.seq <= ?"
                " ORDER BY e.seq DESC LIMIT ?",
                (conv_id, visible_from, high, limit),
            ).fetchall()
            return [entry_of(row) for row in reversed(rows)]

        return await self._readers.run("history", history)

    async def entries_for(self, user_id: int, *, after: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []

        def entries_for(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                _VISIBLE_ENTRIES_AFTER, {"user_id": user_id, "after": after, "limit": limit}
            )
            return [entry_of(row) for row in rows]

        return await self._readers.run("entries_for", entries_for)

    async def summaries(self, user_id: int, *, changed_after: int) -> list[Summary]:
        def summaries(conn: sqlite3.Connection) -> list[Summary]:
            found: list[Summary] = []
            for row in conn.execute(_SUMMARY_ROWS, (user_id, changed_after)).fetchall():
                conversation, member = conversation_of(row[:11]), member_of(row[11:])
                top = _last_visible_seq(member, last_seq=conversation.last_seq)
                last = conn.execute(
                    f"{SELECT_ENTRY} WHERE e.conv_id = ? AND e.seq >= ? AND e.seq <= ?"
                    " ORDER BY e.seq DESC LIMIT 1",
                    (member.conv_id, member.visible_from, top),
                ).fetchone()
                found.append(
                    Summary(
                        conversation=conversation,
                        member=member,
                        unread=_unread(conn, member, last_seq=conversation.last_seq),
                        last_message=None if last is None else entry_of(last),
                    )
                )
            return found

        return await self._readers.run("summaries", summaries)

    async def read_counts(self, conv_id: str, seqs: Sequence[int]) -> list[ReadCount]:
        """Ascending by seq, each seq once."""
        wanted = sorted(set(seqs))

        def read_counts(conn: sqlite3.Connection) -> list[ReadCount]:
            row = conn.execute(
                "SELECT member_count FROM conversations WHERE conv_id = ?", (conv_id,)
            ).fetchone()
            if row is None:
                return []
            member_count = row[0]
            counts: list[ReadCount] = []
            for seq in wanted:
                sender = _message_sender(conn, conv_id, seq)
                if sender is None:
                    continue
                # Who can see seq: every current member but those who joined after it and
                # did not see it in an earlier membership (few, by an index), less the
                # sender. Who read it: a range of the read index, and those of the late
                # joiners who saw it earlier and read it then.
                params = {"conv_id": conv_id, "seq": seq, "sender": sender}
                # Counted, not fetched: a group of 10,000 that grew after hiding its
                # history has thousands of late joiners for each old seq.
                (late,) = conn.execute(_LATE_COUNT, params).fetchone()
                sender_current = conn.execute(
                    "SELECT 1 FROM members WHERE conv_id = ? AND user_id = ? AND left_seq IS NULL",
                    (conv_id, sender),
                ).fetchone()
                sender_late = conn.execute(_SENDER_LATE, params).fetchone() is not None
                sender_sees = sender_current is not None and not sender_late
                audience = member_count - late - (1 if sender_sees else 0)
                (read,) = conn.execute(
                    "SELECT count(*) FROM members INDEXED BY members_by_read"
                    " WHERE conv_id = ? AND left_seq IS NULL AND read_seq >= ?"
                    " AND visible_from <= ? AND user_id != ?",
                    (conv_id, seq, seq, sender),
                ).fetchone()
                (read_earlier,) = conn.execute(_READ_EARLIER, params).fetchone()
                read += read_earlier
                counts.append(ReadCount(seq=seq, read=read, unread=audience - read))
            return counts

        return await self._readers.run("read_counts", read_counts)

    async def readers(
        self, conv_id: str, seq: int, *, read: bool, after_user: int, limit: int
    ) -> list[int]:
        """Empty when ``seq`` is not a ``message`` entry."""

        def readers(conn: sqlite3.Connection) -> list[int]:
            sender = _message_sender(conn, conv_id, seq)
            if sender is None:
                return []
            rows = conn.execute(
                _READERS if read else _NON_READERS,
                {
                    "conv_id": conv_id,
                    "after": after_user,
                    "sender": sender,
                    "seq": seq,
                    "limit": max(limit, 0),
                },
            )
            return [user_id for (user_id,) in rows]

        return await self._readers.run("readers", readers)

    async def head(self) -> int:
        def head(conn: sqlite3.Connection) -> int:
            (stream,) = conn.execute("SELECT coalesce(max(stream), 0) FROM entries").fetchone()
            return int(stream)

        return await self._readers.run_inline("head", head)


# --- reads shared by several methods --------------------------------------------------------


def _message_sender(conn: sqlite3.Connection, conv_id: str, seq: int) -> int | None:
    row = conn.execute(
        "SELECT sender FROM entries WHERE conv_id = ? AND seq = ? AND kind = 'message'",
        (conv_id, seq),
    ).fetchone()
    return None if row is None else int(row[0])


def _last_visible_seq(member: Member, *, last_seq: int) -> int:
    return last_seq if member.left_seq is None else min(last_seq, member.left_seq)


def _unread(conn: sqlite3.Connection, member: Member, *, last_seq: int) -> int:
    """Visible messages above the read position, not the member's own, not recalled: in
    every range the member sees (an earlier membership's unread messages still count)."""
    unread = 0
    for first, last in member.ranges:
        low = max(member.read_seq + 1, first)
        high = last_seq if last is None else min(last, last_seq)
        if low > high:
            continue  # read already, or nothing posted there yet
        (count,) = conn.execute(
            "SELECT count(*) FROM entries WHERE conv_id = ? AND seq >= ? AND seq <= ?"
            " AND kind = 'message' AND sender != ? AND recalled_by IS NULL",
            (member.conv_id, low, high, member.user_id),
        ).fetchone()
        unread += count
    return unread
