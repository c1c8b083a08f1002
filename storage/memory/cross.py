"""The in-memory cross-domain store (D3), the reference implementation of ``CrossDomainStore``.

Every method runs to completion without awaiting, so under trio each one is a single atomic
transaction; a write checks everything that can fail before it changes anything. Rows are
frozen records, replaced on update, so handing them out is safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec.structs import replace

from storage.errors import ConversationMissing, NotAMember
from storage.memory.idempotency import IdempotencyLog
from storage.records import (
    Appended,
    Conversation,
    ConversationChange,
    Entry,
    EntryKind,
    IdempotencyKey,
    Member,
    MemberChange,
    NewConversation,
    NewEntry,
    PendingEffect,
    ReadCount,
    ReadMoved,
    Recall,
    Summary,
)


class MemoryCrossDomainStore:
    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        #: conv id -> user id -> membership row, departed members included.
        self._members: dict[str, dict[int, Member]] = {}
        #: user id -> the conversations in which the user has a membership row.
        self._conv_ids_of: dict[int, set[str]] = {}
        #: Every entry of every kind, in commit order: stream position = index + 1.
        self._stream: list[Entry] = []
        #: conv id -> stream positions of its message and system entries: seq = index + 1.
        self._seq_streams: dict[str, list[int]] = {}
        #: (conv id, seq) -> stream position of the first recall entry naming that message.
        self._recalls: dict[tuple[str, int], int] = {}
        #: Idempotency key -> stream position of the entry it appended.
        self._idempotency: IdempotencyLog[int] = IdempotencyLog()
        self._group_numbers = 0
        #: effect id -> (kind, stream position of its entry)
        self._effects: dict[int, tuple[str, int]] = {}
        self._effect_ids = 0

    # writes

    async def append(self, entry: NewEntry) -> Appended:
        """``ValueError`` if ``entry.create`` names another conversation than ``entry``."""
        if entry.create is not None and entry.create.conv_id != entry.conv_id:
            raise ValueError("entry.create.conv_id must equal entry.conv_id")
        if entry.idempotency is not None:
            found = await self.recorded(entry.idempotency)
            if found is not None:
                return found

        conversation = self._conversations.get(entry.conv_id)
        rows = self._members.get(entry.conv_id, {})
        # Rows this append creates or replaces, committed together at the end.
        changed: dict[int, Member] = {}
        if conversation is None:
            if entry.create is None:
                raise ConversationMissing("conversation does not exist")
            conversation, changed = _created(entry.create, now=entry.ts)

        def row_of(user_id: int) -> Member | None:
            return changed.get(user_id, rows.get(user_id))

        if entry.require_member is not None:
            required = row_of(entry.require_member)
            if required is None or not required.active:
                raise NotAMember("user is not a current member")

        seq = conversation.last_seq + 1
        member_count = conversation.member_count
        for change in entry.member_changes:
            before = row_of(change.user_id)
            after = _changed_member(before, change, conv_id=entry.conv_id, seq=seq)
            if after is not None:
                changed[change.user_id] = after
                member_count += int(after.active) - int(before is not None and before.active)
        if entry.kind == "message":
            sender = row_of(entry.sender)
            if sender is not None and sender.sees(seq) and sender.read_seq < seq:
                changed[entry.sender] = replace(sender, read_seq=seq)
        conversation = _changed_conversation(conversation, entry.conversation_change)

        # Nothing below can fail: commit.
        stored = Entry(
            stream=len(self._stream) + 1,
            conv_id=entry.conv_id,
            seq=seq,
            kind=entry.kind,
            sender=entry.sender,
            ts=entry.ts,
            cmid=entry.cmid,
            body=entry.body,
        )
        self._stream.append(stored)
        self._seq_streams.setdefault(entry.conv_id, []).append(stored.stream)
        conversation = replace(
            conversation, last_seq=seq, last_stream=stored.stream, member_count=member_count
        )
        self._conversations[entry.conv_id] = conversation
        self._members.setdefault(entry.conv_id, {}).update(changed)
        for user_id in changed:
            self._conv_ids_of.setdefault(user_id, set()).add(entry.conv_id)
        self._idempotency.record(entry.idempotency, stored.stream, now=entry.ts)
        for kind in entry.effects:
            self._effect_ids += 1
            self._effects[self._effect_ids] = (kind, stored.stream)
        return Appended(entry=stored, conversation=conversation)

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingEffect]:
        out = []
        for effect_id in sorted(self._effects):
            if effect_id > after:
                kind, stream = self._effects[effect_id]
                out.append(
                    PendingEffect(effect_id=effect_id, kind=kind, entry=self._stream[stream - 1])
                )
                if len(out) == limit:
                    break
        return out

    async def finish_effect(self, effect_id: int) -> None:
        self._effects.pop(effect_id, None)

    async def recall(self, *, conv_id: str, seq: int, by: int, now: int) -> Recall:
        message = self._entry_at(conv_id, seq)
        if message is None or message.kind != "message":
            raise ConversationMissing("no message at that seq")
        first = self._recalls.get((conv_id, seq))
        if first is not None:
            return Recall(entry=self._stream[first - 1], duplicate=True)
        # M4: the content goes, the seq stays so nobody's sequence has a hole.
        self._stream[message.stream - 1] = replace(message, body=None, recalled=True)
        recall = self._append_unsequenced(conv_id, seq=seq, kind="recall", sender=by, ts=now)
        self._recalls[(conv_id, seq)] = recall.stream
        return Recall(entry=recall)

    async def mark_read(self, *, conv_id: str, user_id: int, seq: int, now: int) -> ReadMoved:
        member = self._members.get(conv_id, {}).get(user_id)
        if member is None or not member.active:
            raise NotAMember("user is not a current member")
        target = min(seq, self._conversations[conv_id].last_seq)
        if target <= member.read_seq:
            return ReadMoved(entry=None, read_seq=member.read_seq, unread=self._unread(member))
        member = replace(member, read_seq=target)
        self._members[conv_id][user_id] = member
        read = self._append_unsequenced(conv_id, seq=target, kind="read", sender=user_id, ts=now)
        return ReadMoved(entry=read, read_seq=target, unread=self._unread(member))

    async def next_group_number(self) -> int:
        self._group_numbers += 1
        return self._group_numbers

    async def prune_idempotency(self, *, older_than: int) -> int:
        return self._idempotency.prune(older_than=older_than)

    # reads

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        return self._conversations.get(conv_id)

    async def get_member(self, conv_id: str, user_id: int) -> Member | None:
        return self._members.get(conv_id, {}).get(user_id)

    async def list_members(self, conv_id: str, *, after_user: int, limit: int) -> list[Member]:
        current = [m for m in self._current_members(conv_id) if m.user_id > after_user]
        return current[: max(limit, 0)]

    async def member_ids(self, conv_id: str) -> list[int]:
        return [m.user_id for m in self._current_members(conv_id)]

    async def joined_after(self, conv_id: str, seq: int) -> list[int]:
        return [m.user_id for m in self._current_members(conv_id) if not m.sees(seq)]

    async def memberships(self, user_id: int) -> list[Member]:
        """Ascending by conversation id."""
        return [self._members[conv_id][user_id] for conv_id in await self.membership_ids(user_id)]

    async def membership_ids(self, user_id: int) -> list[str]:
        return sorted(self._conv_ids_of.get(user_id, ()))

    async def get_entry(self, conv_id: str, seq: int) -> Entry | None:
        return self._entry_at(conv_id, seq)

    async def history(
        self,
        conv_id: str,
        *,
        visible_from: int,
        visible_to: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Entry]:
        streams = self._seq_streams.get(conv_id, [])
        high = len(streams)
        if before_seq is not None:
            high = min(high, before_seq - 1)
        if visible_to is not None:
            high = min(high, visible_to)
        low = max(visible_from, high - limit + 1, 1)
        if limit <= 0 or high < low:
            return []
        return [self._stream[stream - 1] for stream in streams[low - 1 : high]]

    async def entries_for(self, user_id: int, *, after: int, limit: int) -> list[Entry]:
        rows = {c: self._members[c][user_id] for c in self._conv_ids_of.get(user_id, ())}
        found: list[Entry] = []
        if limit <= 0:
            return found
        for index in range(max(after, 0), len(self._stream)):
            entry = self._stream[index]
            member = rows.get(entry.conv_id)
            if member is not None and self._visible(member, entry):
                found.append(entry)
                if len(found) == limit:
                    break
        return found

    async def summaries(self, user_id: int, *, changed_after: int) -> list[Summary]:
        found: list[Summary] = []
        for conv_id in self._conv_ids_of.get(user_id, ()):
            conversation = self._conversations[conv_id]
            if conversation.last_stream <= changed_after:
                continue
            member = self._members[conv_id][user_id]
            top = self._last_visible_seq(member)
            summary = Summary(
                conversation=conversation,
                member=member,
                unread=self._unread(member),
                last_message=self._entry_at(conv_id, top) if top >= member.visible_from else None,
            )
            found.append(summary)
        found.sort(key=lambda summary: summary.conversation.last_stream, reverse=True)
        return found

    async def read_counts(self, conv_id: str, seqs: Sequence[int]) -> list[ReadCount]:
        """Ascending by seq, each seq once."""
        counts: list[ReadCount] = []
        for seq in sorted(set(seqs)):
            audience = self._receipt_audience(conv_id, seq)
            if audience is None:
                continue
            read = sum(1 for member in audience if member.read_seq >= seq)
            counts.append(ReadCount(seq=seq, read=read, unread=len(audience) - read))
        return counts

    async def readers(
        self, conv_id: str, seq: int, *, read: bool, after_user: int, limit: int
    ) -> list[int]:
        """Empty when ``seq`` is not a ``message`` entry."""
        audience = self._receipt_audience(conv_id, seq) or []
        found = [
            member.user_id
            for member in audience
            if member.user_id > after_user and (member.read_seq >= seq) == read
        ]
        return found[: max(limit, 0)]

    async def head(self) -> int:
        return len(self._stream)

    # helpers

    def _append_unsequenced(
        self, conv_id: str, *, seq: int, kind: EntryKind, sender: int, ts: int
    ) -> Entry:
        """Append a ``recall`` or ``read`` entry: a stream position but no seq of its own."""
        entry = Entry(
            stream=len(self._stream) + 1, conv_id=conv_id, seq=seq, kind=kind, sender=sender, ts=ts
        )
        self._stream.append(entry)
        conversation = self._conversations[conv_id]
        self._conversations[conv_id] = replace(conversation, last_stream=entry.stream)
        return entry

    def _entry_at(self, conv_id: str, seq: int) -> Entry | None:
        streams = self._seq_streams.get(conv_id, [])
        if 1 <= seq <= len(streams):
            return self._stream[streams[seq - 1] - 1]
        return None

    def _current_members(self, conv_id: str) -> list[Member]:
        rows = self._members.get(conv_id, {})
        return sorted((m for m in rows.values() if m.active), key=lambda m: m.user_id)

    def _visible(self, member: Member, entry: Entry) -> bool:
        """The visibility rule of ``CrossDomainStore``."""
        # Read positions in a group are private to their owner; in a single chat the peer's
        # position is the read receipt.
        if (
            entry.kind == "read"
            and entry.sender != member.user_id
            and self._conversations[entry.conv_id].kind == "group"
        ):
            return False
        return member.sees(entry.seq)

    def _last_visible_seq(self, member: Member) -> int:
        last_seq = self._conversations[member.conv_id].last_seq
        return last_seq if member.left_seq is None else min(last_seq, member.left_seq)

    def _unread(self, member: Member) -> int:
        """Visible messages above the read position, not the member's own, not recalled: in
        every range the member sees (an earlier membership's unread messages still count)."""
        last_seq = self._conversations[member.conv_id].last_seq
        unread = 0
        for first, last in member.ranges:
            high = last_seq if last is None else min(last, last_seq)
            for seq in range(max(member.read_seq + 1, first), high + 1):
                entry = self._entry_at(member.conv_id, seq)
                if (
                    entry is not None
                    and entry.kind == "message"
                    and entry.sender != member.user_id
                    and not entry.recalled
                ):
                    unread += 1
        return unread

    def _receipt_audience(self, conv_id: str, seq: int) -> list[Member] | None:
        """Current members other than the sender who see message ``seq``, ascending by user
        id; None if there is no message at ``seq``."""
        message = self._entry_at(conv_id, seq)
        if message is None or message.kind != "message":
            return None
        return [
            member
            for member in self._current_members(conv_id)
            if member.user_id != message.sender and member.sees(seq)
        ]

    async def recorded(self, key: IdempotencyKey) -> Appended | None:
        original = self._idempotency.lookup(key)
        if original is None:
            return None
        first = self._stream[original - 1]
        current = self._conversations[first.conv_id]
        return Appended(entry=first, conversation=current, duplicate=True)

    async def count_conversations(self, id_prefix: str) -> int:
        return sum(1 for conv_id in self._conversations if conv_id.startswith(id_prefix))

    async def delete_conversations(self, id_prefix: str, *, limit: int) -> int:
        deleted = 0
        for conv_id in sorted(c for c in self._conversations if c.startswith(id_prefix)):
            if deleted >= limit:
                break
            streams = {e.stream for e in self._stream if e.conv_id == conv_id}
            # A deleted entry leaves an empty slot: stream positions index the list.
            for stream in streams:
                self._stream[stream - 1] = Entry(
                    stream=stream, conv_id="", seq=0, kind="read", sender=0, ts=0
                )
            self._effects = {i: e for i, e in self._effects.items() if e[1] not in streams}
            self._idempotency.forget_results(streams)
            members = self._members.pop(conv_id, {})
            for user_id in members:
                self._conv_ids_of.get(user_id, set()).discard(conv_id)
            self._seq_streams.pop(conv_id, None)
            self._recalls = {k: v for k, v in self._recalls.items() if k[0] != conv_id}
            del self._conversations[conv_id]
            deleted += len(streams) + len(members) + 1
        return deleted

    async def erase_sender(self, user_id: int, *, now: int, limit: int) -> list[Entry]:
        erased: list[Entry] = []
        for entry in list(self._stream):
            if len(erased) >= limit:
                break
            if entry.kind == "message" and entry.sender == user_id and not entry.recalled:
                self._stream[entry.stream - 1] = replace(entry, body=None, recalled=True)
                recall = self._append_unsequenced(
                    entry.conv_id, seq=entry.seq, kind="recall", sender=user_id, ts=now
                )
                self._recalls[(entry.conv_id, entry.seq)] = recall.stream
                erased.append(recall)
        return erased


def _created(create: NewConversation, *, now: int) -> tuple[Conversation, dict[int, Member]]:
    """A new conversation and its first members, all visible from seq 1."""
    members = {
        user_id: Member(conv_id=create.conv_id, user_id=user_id, role=role)
        for user_id, role in create.members
    }
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
    return conversation, members


def _changed_member(
    row: Member | None, change: MemberChange, *, conv_id: str, seq: int
) -> Member | None:
    """The row after ``change`` is applied by the entry at ``seq``; None if it changes nothing
    (removing or updating someone who is not a current member)."""
    current = row is not None and row.active
    if change.op == "add" and not current:
        return Member(
            conv_id=conv_id,
            user_id=change.user_id,
            role=change.role or "member",
            muted=bool(change.muted),
            visible_from=1 if change.history_from_start else seq,
            # A re-admitted member keeps what they had read before they left ...
            read_seq=0 if row is None else row.read_seq,
            # ... and what they saw then (M1: the group hides from them only what was said
            # while they were away); seeing from seq 1 again covers every earlier range.
            earlier=() if row is None or change.history_from_start else _ranges_until_left(row),
        )
    if row is None or not current:
        return None
    if change.op == "remove":
        return replace(row, left_seq=seq)
    # "update", or "add" of a current member: their visibility stays as it is.
    return replace(
        row,
        role=row.role if change.role is None else change.role,
        muted=row.muted if change.muted is None else change.muted,
    )


def _ranges_until_left(row: Member) -> tuple[tuple[int, int], ...]:
    """Every range a departed member saw, the last one closed at their leaving."""
    assert row.left_seq is not None
    return (*row.earlier, (row.visible_from, row.left_seq))


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
