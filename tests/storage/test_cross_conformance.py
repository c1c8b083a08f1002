"""Conformance of every ``CrossDomainStore`` backend (D3) to ``storage/interfaces.py``.

Only the ``stores`` fixture and the public interface are used, so each test runs on every
backend. Times are fixed integers, never the real clock.
"""

from __future__ import annotations

import pytest
import trio

from storage.errors import ConversationMissing, IdempotencyConflict, NotAMember
from storage.interfaces import CrossDomainStore
from storage.records import (
    Appended,
    ConversationChange,
    ConversationKindName,
    Entry,
    IdempotencyKey,
    MemberChange,
    NewConversation,
    NewEntry,
    ReadCount,
    RoleName,
)
from storage.stores import Stores

NOW = 1_000_000
GROUP = "g:1"
DIRECT = "d:1:2"


def key(sender: int, client_id: str, fingerprint: bytes = b"fp-1") -> IdempotencyKey:
    return IdempotencyKey(sender=sender, client_id=client_id, fingerprint=fingerprint)


def new_conversation(
    conv_id: str,
    members: tuple[int, ...],
    *,
    kind: ConversationKindName = "group",
    owner: int | None = 1,
    history_visible: bool = False,
) -> NewConversation:
    roles: tuple[tuple[int, RoleName], ...] = tuple(
        (user_id, "owner" if user_id == owner else "member") for user_id in members
    )
    return NewConversation(
        conv_id=conv_id,
        kind=kind,
        title="team",
        owner_id=owner,
        member_limit=500,
        history_visible=history_visible,
        members=roles,
    )


async def create_group(
    cross: CrossDomainStore, members: tuple[int, ...] = (1, 2, 3), conv_id: str = GROUP
) -> Appended:
    """A group owned by user 1, created by its seq 1 ``system`` entry."""
    return await cross.append(
        NewEntry(
            conv_id=conv_id,
            kind="system",
            sender=1,
            ts=NOW,
            body=b"created",
            create=new_conversation(conv_id, members),
        )
    )


async def create_direct(cross: CrossDomainStore) -> Appended:
    """The single chat of users 1 and 2, created by user 1's first message (seq 1)."""
    return await cross.append(
        NewEntry(
            conv_id=DIRECT,
            kind="message",
            sender=1,
            ts=NOW,
            body=b"hello",
            create=new_conversation(DIRECT, (1, 2), kind="direct", owner=None),
        )
    )


async def send(
    cross: CrossDomainStore,
    sender: int,
    body: bytes = b"hi",
    *,
    conv_id: str = GROUP,
    ts: int = NOW,
    idempotency: IdempotencyKey | None = None,
) -> Entry:
    appended = await cross.append(
        NewEntry(
            conv_id=conv_id,
            kind="message",
            sender=sender,
            ts=ts,
            body=body,
            cmid=None if idempotency is None else idempotency.client_id,
            idempotency=idempotency,
            require_member=sender,
        )
    )
    return appended.entry


async def change_members(
    cross: CrossDomainStore, *changes: MemberChange, conv_id: str = GROUP
) -> Appended:
    return await cross.append(
        NewEntry(
            conv_id=conv_id,
            kind="system",
            sender=1,
            ts=NOW,
            body=b"members",
            member_changes=changes,
        )
    )


def add(user_id: int, *, history_from_start: bool = False) -> MemberChange:
    return MemberChange(user_id=user_id, op="add", history_from_start=history_from_start)


def remove(user_id: int) -> MemberChange:
    return MemberChange(user_id=user_id, op="remove")


def seqs(entries: list[Entry]) -> list[int]:
    return [entry.seq for entry in entries]


def kinds_and_seqs(entries: list[Entry]) -> list[tuple[str, int]]:
    return [(entry.kind, entry.seq) for entry in entries]


# --- append: creation, preconditions, idempotency ---------------------------------------------


async def test_head_and_group_numbers_start_empty(stores: Stores) -> None:
    assert await stores.cross.head() == 0
    assert await stores.cross.get_conversation(GROUP) is None
    assert await stores.cross.entries_for(1, after=0, limit=10) == []


async def test_append_with_create_makes_conversation_and_members_visible_from_seq_1(
    stores: Stores,
) -> None:
    appended = await create_group(stores.cross, members=(1, 2, 3))

    assert not appended.duplicate
    entry = appended.entry
    assert (entry.seq, entry.stream, entry.kind, entry.sender, entry.ts, entry.body) == (
        1,
        1,
        "system",
        1,
        NOW,
        b"created",
    )
    conversation = appended.conversation
    assert conversation == await stores.cross.get_conversation(GROUP)
    assert (conversation.kind, conversation.title, conversation.owner_id) == ("group", "team", 1)
    assert (conversation.created_at, conversation.member_limit) == (NOW, 500)
    assert (conversation.last_seq, conversation.last_stream, conversation.member_count) == (1, 1, 3)
    owner = await stores.cross.get_member(GROUP, 1)
    member = await stores.cross.get_member(GROUP, 3)
    assert owner is not None and member is not None
    assert (owner.role, owner.visible_from, owner.left_seq, owner.read_seq) == ("owner", 1, None, 0)
    assert (member.role, member.visible_from, member.left_seq) == ("member", 1, None)
    assert await stores.cross.member_ids(GROUP) == [1, 2, 3]
    assert await stores.cross.get_entry(GROUP, 1) == entry
    assert await stores.cross.head() == 1


async def test_append_create_is_ignored_when_the_conversation_exists(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))

    appended = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="message",
            sender=2,
            ts=NOW + 1,
            body=b"hi",
            create=NewConversation(
                conv_id=GROUP,
                kind="group",
                title="other",
                owner_id=9,
                member_limit=3,
                members=((9, "owner"),),
            ),
        )
    )

    assert appended.entry.seq == 2
    assert (appended.conversation.title, appended.conversation.owner_id) == ("team", 1)
    assert appended.conversation.member_count == 2
    assert await stores.cross.get_member(GROUP, 9) is None


async def test_append_whose_create_names_another_conversation_is_refused(
    stores: Stores,
) -> None:
    with pytest.raises(ValueError):
        await stores.cross.append(
            NewEntry(
                conv_id=GROUP,
                kind="system",
                sender=1,
                ts=NOW,
                body=b"created",
                create=new_conversation("g:2", (1, 2)),
            )
        )

    assert await stores.cross.get_conversation(GROUP) is None
    assert await stores.cross.get_conversation("g:2") is None
    assert await stores.cross.head() == 0


async def test_append_to_missing_conversation_without_create_raises_and_stores_nothing(
    stores: Stores,
) -> None:
    with pytest.raises(ConversationMissing):
        await send(stores.cross, 1)

    assert await stores.cross.head() == 0
    assert await stores.cross.get_conversation(GROUP) is None


async def test_a_cancelled_append_is_either_reported_or_not_stored(stores: Stores) -> None:
    await create_group(stores.cross)
    sent: list[Entry] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        sent.append(await send(stores.cross, 1))
    head = await stores.cross.head()
    if scope.cancelled_caught:
        assert sent == [] and head == 1  # nothing of the message stored
    else:
        assert [entry.stream for entry in sent] == [head] and head == 2


async def test_append_require_member_refuses_strangers_and_departed_members(
    stores: Stores,
) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await change_members(stores.cross, remove(3))
    head = await stores.cross.head()

    with pytest.raises(NotAMember):
        await send(stores.cross, 7)
    with pytest.raises(NotAMember):
        await send(stores.cross, 3)

    assert await stores.cross.head() == head
    conversation = await stores.cross.get_conversation(GROUP)
    assert conversation is not None and conversation.last_seq == 2


async def test_append_require_member_counts_members_created_by_the_same_append(
    stores: Stores,
) -> None:
    appended = await stores.cross.append(
        NewEntry(
            conv_id=DIRECT,
            kind="message",
            sender=1,
            ts=NOW,
            body=b"hello",
            create=new_conversation(DIRECT, (1, 2), kind="direct", owner=None),
            require_member=1,
        )
    )

    assert appended.entry.seq == 1
    assert appended.conversation.kind == "direct"


async def test_append_that_fails_require_member_does_not_create_the_conversation(
    stores: Stores,
) -> None:
    with pytest.raises(NotAMember):
        await stores.cross.append(
            NewEntry(
                conv_id=GROUP,
                kind="message",
                sender=5,
                ts=NOW,
                body=b"hi",
                create=new_conversation(GROUP, (1, 2)),
                require_member=5,
            )
        )

    assert await stores.cross.get_conversation(GROUP) is None
    assert await stores.cross.get_member(GROUP, 1) is None
    assert await stores.cross.memberships(1) == []
    assert await stores.cross.head() == 0


async def test_append_resend_with_same_key_returns_original_and_stores_nothing(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    first = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="message",
            sender=2,
            ts=NOW,
            body=b"once",
            cmid="c1",
            idempotency=key(2, "c1"),
        )
    )
    head = await stores.cross.head()

    again = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="message",
            sender=2,
            ts=NOW + 5,
            body=b"once",
            cmid="c1",
            idempotency=key(2, "c1"),
        )
    )

    assert again.duplicate
    assert again.entry == first.entry
    assert again.conversation.last_seq == first.conversation.last_seq == 2
    assert await stores.cross.head() == head
    assert await stores.cross.get_entry(GROUP, 3) is None
    assert seqs(
        await stores.cross.history(
            GROUP, visible_from=1, visible_to=None, before_seq=None, limit=10
        )
    ) == [1, 2]


async def test_append_same_key_with_other_fingerprint_raises_conflict_and_stores_nothing(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2, b"first", idempotency=key(2, "c1", b"fp-a"))
    head = await stores.cross.head()

    with pytest.raises(IdempotencyConflict):
        await send(stores.cross, 2, b"second", idempotency=key(2, "c1", b"fp-b"))

    assert await stores.cross.head() == head


async def test_idempotency_keys_are_per_sender(stores: Stores) -> None:
    await create_group(stores.cross)
    first = await send(stores.cross, 2, idempotency=key(2, "c1"))

    other = await send(stores.cross, 3, idempotency=key(3, "c1"))

    assert other.stream != first.stream
    assert (first.seq, other.seq) == (2, 3)


async def test_seqs_are_gap_free_per_conversation_and_streams_increase_across_the_store(
    stores: Stores,
) -> None:
    cross = stores.cross
    await create_group(cross)
    await create_direct(cross)
    produced = [
        await send(cross, 2),
        await send(cross, 1, conv_id=DIRECT),
        (await change_members(cross, add(4))).entry,
        (await cross.recall(conv_id=GROUP, seq=2, by=2, now=NOW)).entry,
        await send(cross, 4),
    ]
    read = (await cross.mark_read(conv_id=GROUP, user_id=3, seq=4, now=NOW)).entry
    assert read is not None
    produced.append(read)
    produced.append(await send(cross, 2, conv_id=DIRECT))

    streams = [entry.stream for entry in produced]
    assert streams == sorted(streams) and len(set(streams)) == len(streams)
    assert streams[0] > 2  # after the two creating entries
    assert await cross.head() == streams[-1]
    group = await cross.history(GROUP, visible_from=1, visible_to=None, before_seq=None, limit=50)
    direct = await cross.history(DIRECT, visible_from=1, visible_to=None, before_seq=None, limit=50)
    assert seqs(group) == [1, 2, 3, 4]
    assert seqs(direct) == [1, 2, 3]
    assert [entry.kind for entry in group] == ["system", "message", "system", "message"]
    conversation = await cross.get_conversation(GROUP)
    assert conversation is not None
    # The read entry (no seq of its own) is the newest entry of the group.
    assert (conversation.last_seq, conversation.last_stream) == (4, read.stream)


async def test_message_moves_its_senders_read_position_and_system_entry_does_not(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2)

    sender = await stores.cross.get_member(GROUP, 2)
    other = await stores.cross.get_member(GROUP, 3)
    creator = await stores.cross.get_member(GROUP, 1)
    assert sender is not None and other is not None and creator is not None
    assert sender.read_seq == 2
    assert other.read_seq == 0
    assert creator.read_seq == 0  # the creating entry is a system entry
    summaries = await stores.cross.summaries(2, changed_after=0)
    assert summaries[0].unread == 0


# --- append: member and conversation changes ------------------------------------------------


async def test_added_member_sees_from_the_joining_entry(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await send(stores.cross, 2)
    joined = await change_members(stores.cross, add(5))

    member = await stores.cross.get_member(GROUP, 5)
    assert member is not None
    assert (member.visible_from, member.left_seq, member.role) == (3, None, "member")
    assert joined.conversation.member_count == 3
    assert await stores.cross.member_ids(GROUP) == [1, 2, 5]
    await send(stores.cross, 1)
    assert kinds_and_seqs(await stores.cross.entries_for(5, after=0, limit=10)) == [
        ("system", 3),
        ("message", 4),
    ]


async def test_joined_after_names_the_current_members_who_cannot_see_a_seq(
    stores: Stores,
) -> None:
    """M4: a recall's audience leaves out those added after the message (history hidden);
    one added with the history, and one who left, are not among them."""
    await create_group(stores.cross, members=(1, 2, 3))
    await send(stores.cross, 2)  # seq 2
    await change_members(stores.cross, add(7))  # seq 3: sees from 3
    await change_members(stores.cross, add(5, history_from_start=True))  # sees from 1
    await change_members(stores.cross, add(6))  # seq 5: sees from 5
    await change_members(stores.cross, remove(6))  # left: not current
    assert await stores.cross.joined_after(GROUP, 2) == [7]
    assert await stores.cross.joined_after(GROUP, 3) == []
    assert await stores.cross.joined_after(GROUP, 1) == [7]
    assert await stores.cross.joined_after("g:404", 1) == []


async def test_added_member_with_history_from_start_sees_from_seq_1(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await send(stores.cross, 2)
    await change_members(stores.cross, add(5, history_from_start=True))

    member = await stores.cross.get_member(GROUP, 5)
    assert member is not None and member.visible_from == 1
    assert seqs(await stores.cross.entries_for(5, after=0, limit=10)) == [1, 2, 3]


async def test_removed_member_keeps_a_departed_row_with_left_seq(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    removed = await change_members(stores.cross, remove(3))
    await send(stores.cross, 1)

    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None
    assert member.left_seq == removed.entry.seq == 2
    assert not member.active
    assert removed.conversation.member_count == 2
    assert await stores.cross.member_ids(GROUP) == [1, 2]
    assert [m.user_id for m in await stores.cross.list_members(GROUP, after_user=0, limit=10)] == [
        1,
        2,
    ]
    assert [(m.conv_id, m.left_seq) for m in await stores.cross.memberships(3)] == [(GROUP, 2)]
    # They see the entry that removed them, and nothing after it.
    assert seqs(await stores.cross.entries_for(3, after=0, limit=10)) == [1, 2]


async def test_readded_member_is_current_again_and_sees_from_the_new_join(
    stores: Stores,
) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await change_members(stores.cross, remove(3))
    await send(stores.cross, 1)
    readded = await change_members(stores.cross, add(3))

    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None
    assert (member.left_seq, member.visible_from) == (None, 4)
    # M1: the earlier membership's range is kept (tests/storage/test_rejoin_conformance.py).
    assert member.earlier == ((1, 2),)
    assert readded.conversation.member_count == 3
    assert await stores.cross.member_ids(GROUP) == [1, 2, 3]


async def test_update_sets_role_and_muted_of_a_current_member_only(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await change_members(stores.cross, remove(3))

    updated = await change_members(
        stores.cross,
        MemberChange(user_id=2, op="update", role="admin"),
        MemberChange(user_id=3, op="update", role="admin", muted=True),
    )
    await change_members(stores.cross, MemberChange(user_id=2, op="update", muted=True))

    member = await stores.cross.get_member(GROUP, 2)
    departed = await stores.cross.get_member(GROUP, 3)
    assert member is not None and departed is not None
    assert (member.role, member.muted, member.visible_from) == ("admin", True, 1)
    assert (departed.role, departed.muted, departed.left_seq) == ("member", False, 2)
    assert updated.conversation.member_count == 2


async def test_member_count_follows_adds_removes_and_repeated_changes(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))

    several = await change_members(stores.cross, add(3), add(4), remove(2))
    assert several.conversation.member_count == 3
    again = await change_members(stores.cross, remove(2), add(3))  # no-ops: 2 gone, 3 present
    assert again.conversation.member_count == 3
    back = await change_members(stores.cross, add(2))
    assert back.conversation.member_count == 4
    assert await stores.cross.member_ids(GROUP) == [1, 2, 3, 4]
    conversation = await stores.cross.get_conversation(GROUP)
    assert conversation is not None and conversation.member_count == 4


async def test_conversation_change_sets_only_the_given_fields(stores: Stores) -> None:
    await create_group(stores.cross)

    appended = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="system",
            sender=1,
            ts=NOW,
            body=b"renamed",
            conversation_change=ConversationChange(title="renamed", mute_all=True),
        )
    )
    second = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="system",
            sender=1,
            ts=NOW,
            body=b"handed over",
            conversation_change=ConversationChange(
                owner_id=2, history_visible=True, member_limit=1000
            ),
        )
    )

    first = appended.conversation
    assert (first.title, first.mute_all, first.owner_id, first.member_limit) == (
        "renamed",
        True,
        1,
        500,
    )
    conversation = await stores.cross.get_conversation(GROUP)
    assert conversation == second.conversation
    assert conversation is not None
    assert (conversation.title, conversation.mute_all, conversation.owner_id) == (
        "renamed",
        True,
        2,
    )
    assert (conversation.history_visible, conversation.member_limit) == (True, 1000)


async def test_list_members_pages_current_members_by_user_id(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2, 3, 4, 5, 6))
    await change_members(stores.cross, remove(4))

    first = await stores.cross.list_members(GROUP, after_user=0, limit=2)
    second = await stores.cross.list_members(GROUP, after_user=first[-1].user_id, limit=2)
    third = await stores.cross.list_members(GROUP, after_user=second[-1].user_id, limit=2)

    assert [m.user_id for m in first + second + third] == [1, 2, 3, 5, 6]
    assert len(third) == 1
    assert await stores.cross.list_members("g:404", after_user=0, limit=5) == []


async def test_memberships_include_every_conversation_and_departed_rows(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await create_group(stores.cross, members=(1, 2), conv_id="g:2")
    await create_direct(stores.cross)
    await change_members(stores.cross, remove(2), conv_id="g:2")

    rows = await stores.cross.memberships(2)

    assert sorted((m.conv_id, m.left_seq) for m in rows) == [
        (DIRECT, None),
        (GROUP, None),
        ("g:2", 2),
    ]
    assert await stores.cross.memberships(99) == []
    assert await stores.cross.membership_ids(2) == [m.conv_id for m in rows]
    assert await stores.cross.membership_ids(99) == []


# --- recall (M4) ------------------------------------------------------------------------------


async def test_recall_erases_the_body_keeps_the_seq_and_appends_a_recall_entry(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    message = await send(stores.cross, 2, b"secret")
    await send(stores.cross, 3, b"later")

    result = await stores.cross.recall(conv_id=GROUP, seq=2, by=2, now=NOW + 7)

    assert not result.duplicate
    recall = result.entry
    assert (recall.kind, recall.seq, recall.sender, recall.ts) == ("recall", 2, 2, NOW + 7)
    assert recall.stream == await stores.cross.head()
    tombstone = await stores.cross.get_entry(GROUP, 2)
    assert tombstone is not None
    assert (tombstone.body, tombstone.recalled) == (None, True)
    assert (tombstone.stream, tombstone.seq, tombstone.sender) == (
        message.stream,
        2,
        2,
    )
    conversation = await stores.cross.get_conversation(GROUP)
    assert conversation is not None
    assert (conversation.last_seq, conversation.last_stream) == (3, recall.stream)
    history = await stores.cross.history(
        GROUP, visible_from=1, visible_to=None, before_seq=None, limit=10
    )
    assert [e.body for e in history] == [b"created", None, b"later"]


async def test_recall_twice_returns_the_first_recall_entry_and_appends_nothing(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2)
    first = await stores.cross.recall(conv_id=GROUP, seq=2, by=2, now=NOW)
    head = await stores.cross.head()

    again = await stores.cross.recall(conv_id=GROUP, seq=2, by=1, now=NOW + 1)

    assert again.duplicate
    assert again.entry == first.entry
    assert await stores.cross.head() == head


async def test_recall_without_a_message_at_that_seq_raises_conversation_missing(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2)

    with pytest.raises(ConversationMissing):
        await stores.cross.recall(conv_id=GROUP, seq=1, by=1, now=NOW)  # a system entry
    with pytest.raises(ConversationMissing):
        await stores.cross.recall(conv_id=GROUP, seq=3, by=1, now=NOW)
    with pytest.raises(ConversationMissing):
        await stores.cross.recall(conv_id="g:404", seq=1, by=1, now=NOW)
    assert await stores.cross.head() == 2


# --- mark_read and unread counts ----------------------------------------------------------------


async def test_mark_read_moves_forward_and_appends_a_read_entry(stores: Stores) -> None:
    await create_group(stores.cross)
    for _ in range(3):
        await send(stores.cross, 2)

    moved = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=3, now=NOW + 9)

    assert moved.read_seq == 3
    assert moved.unread == 1  # seq 4
    assert moved.entry is not None
    assert (moved.entry.kind, moved.entry.seq, moved.entry.sender, moved.entry.ts) == (
        "read",
        3,
        3,
        NOW + 9,
    )
    assert moved.entry.stream == await stores.cross.head()
    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None and member.read_seq == 3


async def test_mark_read_clamps_to_the_last_seq(stores: Stores) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2)

    moved = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=1_000, now=NOW)

    assert (moved.read_seq, moved.unread) == (2, 0)
    assert moved.entry is not None and moved.entry.seq == 2


async def test_mark_read_never_moves_backwards_and_then_appends_nothing(stores: Stores) -> None:
    await create_group(stores.cross)
    for _ in range(4):
        await send(stores.cross, 2)
    await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=4, now=NOW)
    head = await stores.cross.head()

    backwards = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=2, now=NOW)
    same = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=4, now=NOW)

    assert (backwards.entry, backwards.read_seq, backwards.unread) == (None, 4, 1)
    assert (same.entry, same.read_seq, same.unread) == (None, 4, 1)
    assert await stores.cross.head() == head
    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None and member.read_seq == 4


async def test_mark_read_by_a_non_member_or_departed_member_raises_not_a_member(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    await send(stores.cross, 2)
    await change_members(stores.cross, remove(3))
    head = await stores.cross.head()

    with pytest.raises(NotAMember):
        await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=2, now=NOW)
    with pytest.raises(NotAMember):
        await stores.cross.mark_read(conv_id=GROUP, user_id=42, seq=2, now=NOW)

    assert await stores.cross.head() == head


async def test_unread_counts_visible_messages_above_read_position_except_recalled(
    stores: Stores,
) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await send(stores.cross, 2)  # seq 2: before 5 joined
    await change_members(stores.cross, add(5))  # seq 3
    await send(stores.cross, 2)  # seq 4
    await send(stores.cross, 3)  # seq 5: recalled below
    await send(stores.cross, 1)  # seq 6
    await stores.cross.recall(conv_id=GROUP, seq=5, by=3, now=NOW)

    [newcomer] = await stores.cross.summaries(5, changed_after=0)
    assert newcomer.unread == 2  # seqs 4 and 6
    await send(stores.cross, 5)  # seq 7: their own message reads everything before it
    [newcomer] = await stores.cross.summaries(5, changed_after=0)
    assert newcomer.unread == 0

    moved = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=3, now=NOW)
    assert (moved.read_seq, moved.unread) == (5, 2)  # 3 had read to their seq 5; 6 and 7 left
    [veteran] = await stores.cross.summaries(2, changed_after=0)
    assert veteran.unread == 2  # 2 read to their seq 4; seq 5 is recalled: 6 and 7


# --- entries_for: the visibility rule ----------------------------------------------------------


async def test_entries_for_hides_entries_before_join_and_after_leave(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await send(stores.cross, 1)  # seq 2
    await change_members(stores.cross, add(3))  # seq 3
    await send(stores.cross, 2)  # seq 4
    await change_members(stores.cross, remove(3))  # seq 5
    await send(stores.cross, 1)  # seq 6
    await stores.cross.recall(conv_id=GROUP, seq=2, by=1, now=NOW)  # names seq 2: invisible
    await stores.cross.recall(conv_id=GROUP, seq=4, by=2, now=NOW)  # names seq 4: visible

    seen = await stores.cross.entries_for(3, after=0, limit=50)

    assert kinds_and_seqs(seen) == [("system", 3), ("message", 4), ("system", 5), ("recall", 4)]
    assert seen[1].recalled and seen[1].body is None


async def test_entries_for_in_a_group_shows_only_the_users_own_read_entries(
    stores: Stores,
) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await send(stores.cross, 1)
    await stores.cross.mark_read(conv_id=GROUP, user_id=2, seq=2, now=NOW)
    await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=2, now=NOW)

    seen_by_2 = await stores.cross.entries_for(2, after=0, limit=50)
    seen_by_1 = await stores.cross.entries_for(1, after=0, limit=50)

    assert [(e.kind, e.sender) for e in seen_by_2] == [("system", 1), ("message", 1), ("read", 2)]
    assert [e.kind for e in seen_by_1] == ["system", "message"]


async def test_entries_for_in_a_direct_chat_shows_the_peers_read_entries(stores: Stores) -> None:
    await create_direct(stores.cross)
    await stores.cross.mark_read(conv_id=DIRECT, user_id=2, seq=1, now=NOW)

    seen_by_sender = await stores.cross.entries_for(1, after=0, limit=50)

    assert [(e.kind, e.seq, e.sender) for e in seen_by_sender] == [
        ("message", 1, 1),
        ("read", 1, 2),
    ]


async def test_entries_for_pages_by_stream_across_conversations(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await create_direct(stores.cross)
    await create_group(stores.cross, members=(3, 4), conv_id="g:2")  # not 1's
    for conv_id in (GROUP, DIRECT, GROUP, DIRECT):
        await send(stores.cross, 2, conv_id=conv_id)
    everything = await stores.cross.entries_for(1, after=0, limit=100)

    pages: list[Entry] = []
    after = 0
    while page := await stores.cross.entries_for(1, after=after, limit=4):
        assert len(page) <= 4
        pages += page
        after = page[-1].stream

    assert pages == everything
    assert len(everything) == 6
    streams = [e.stream for e in everything]
    assert streams == sorted(streams)
    assert {e.conv_id for e in everything} == {GROUP, DIRECT}
    assert await stores.cross.entries_for(1, after=streams[2], limit=2) == everything[3:5]
    assert await stores.cross.entries_for(1, after=streams[-1], limit=10) == []


async def test_entries_for_pages_interleaved_conversations_with_their_own_visibility(
    stores: Stores,
) -> None:
    """Every page size gives the same entries once each, in stream order: a conversation
    the user left stops at the removal, another's reads of a group stay hidden, the single
    chat's read entries show."""
    await create_group(stores.cross, members=(1, 2, 3))
    await create_group(stores.cross, members=(1, 3), conv_id="g:2")
    await create_direct(stores.cross)
    for round_ in range(4):
        await send(stores.cross, 2, conv_id=GROUP)
        await send(stores.cross, 3, conv_id="g:2")
        await send(stores.cross, 2, conv_id=DIRECT)
        await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=round_ + 2, now=NOW)
        await stores.cross.mark_read(conv_id=DIRECT, user_id=1, seq=round_ + 2, now=NOW)
        if round_ == 1:
            await change_members(stores.cross, remove(1), conv_id="g:2")
    everything = await stores.cross.entries_for(1, after=0, limit=1000)

    assert [e.stream for e in everything] == sorted({e.stream for e in everything})
    assert not [e for e in everything if e.kind == "read" and e.conv_id == GROUP]
    assert [e.seq for e in everything if e.conv_id == "g:2"] == [1, 2, 3, 4]  # left at 4
    assert [e.kind for e in everything if e.conv_id == DIRECT].count("read") == 4
    for limit in (1, 2, 3, 5, 8):
        pages: list[Entry] = []
        after = 0
        while page := await stores.cross.entries_for(1, after=after, limit=limit):
            assert len(page) <= limit
            pages += page
            after = page[-1].stream
        assert pages == everything


# --- summaries -------------------------------------------------------------------------------


async def test_summaries_filter_by_changed_after_and_come_newest_first(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    await create_direct(stores.cross)
    await create_group(stores.cross, members=(1, 2), conv_id="g:2")
    await send(stores.cross, 2)  # GROUP is now the newest
    direct = await stores.cross.get_conversation(DIRECT)
    assert direct is not None

    everything = await stores.cross.summaries(1, changed_after=0)
    recent = await stores.cross.summaries(1, changed_after=direct.last_stream)

    assert [s.conversation.conv_id for s in everything] == [GROUP, "g:2", DIRECT]
    assert [s.conversation.conv_id for s in recent] == [GROUP, "g:2"]
    head = await stores.cross.head()
    assert await stores.cross.summaries(1, changed_after=head) == []


async def test_summary_carries_membership_unread_and_newest_visible_entry(
    stores: Stores,
) -> None:
    await create_group(stores.cross, members=(1, 2, 3))
    await send(stores.cross, 1, b"one")  # seq 2
    await send(stores.cross, 2, b"two")  # seq 3
    await change_members(stores.cross, remove(3))  # seq 4
    await send(stores.cross, 1, b"after")  # seq 5

    [current] = await stores.cross.summaries(2, changed_after=0)
    [departed] = await stores.cross.summaries(3, changed_after=0)

    assert current.conversation == await stores.cross.get_conversation(GROUP)
    assert current.member == await stores.cross.get_member(GROUP, 2)
    assert current.unread == 1  # seq 5; seq 3 is their own and moved their read position
    assert current.last_message is not None and current.last_message.body == b"after"
    assert departed.member.left_seq == 4
    assert departed.unread == 2  # seqs 2 and 3, not 5
    assert departed.last_message is not None
    assert (departed.last_message.seq, departed.last_message.kind) == (4, "system")


async def test_member_changes_of_one_entry_apply_in_order(stores: Stores) -> None:
    await create_group(stores.cross, members=(1, 2))
    appended = await stores.cross.append(
        NewEntry(
            conv_id=GROUP,
            kind="system",
            sender=1,
            ts=NOW,
            body=b"removed and re-added",
            member_changes=(remove(2), add(2)),
        )
    )
    await send(stores.cross, 1)

    [summary] = await stores.cross.summaries(2, changed_after=0)
    assert appended.conversation.member_count == 2
    assert (summary.member.visible_from, summary.member.left_seq) == (2, None)
    assert summary.last_message is not None and summary.last_message.seq == 3
    assert summary.unread == 1


# --- history ---------------------------------------------------------------------------------


async def test_history_pages_backwards_in_ascending_order(stores: Stores) -> None:
    await create_group(stores.cross)
    for n in range(9):
        await send(stores.cross, 2, b"m%d" % n)  # seqs 2..10

    newest = await stores.cross.history(
        GROUP, visible_from=1, visible_to=None, before_seq=None, limit=4
    )
    older = await stores.cross.history(
        GROUP, visible_from=1, visible_to=None, before_seq=newest[0].seq, limit=4
    )
    oldest = await stores.cross.history(
        GROUP, visible_from=1, visible_to=None, before_seq=older[0].seq, limit=4
    )

    assert seqs(newest) == [7, 8, 9, 10]
    assert seqs(older) == [3, 4, 5, 6]
    assert seqs(oldest) == [1, 2]
    assert (
        await stores.cross.history(GROUP, visible_from=1, visible_to=None, before_seq=1, limit=4)
        == []
    )


async def test_history_keeps_to_visible_from_and_visible_to_and_skips_recall_and_read(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    for _ in range(9):
        await send(stores.cross, 2)  # seqs 2..10
    await stores.cross.recall(conv_id=GROUP, seq=5, by=2, now=NOW)
    await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=8, now=NOW)

    window = await stores.cross.history(
        GROUP, visible_from=4, visible_to=7, before_seq=None, limit=10
    )
    capped = await stores.cross.history(
        GROUP, visible_from=4, visible_to=7, before_seq=None, limit=2
    )
    below = await stores.cross.history(GROUP, visible_from=4, visible_to=9, before_seq=6, limit=10)

    assert seqs(window) == [4, 5, 6, 7]
    assert {e.kind for e in window} == {"message"}
    assert seqs(capped) == [6, 7]
    assert seqs(below) == [4, 5]
    assert (
        await stores.cross.history(
            "g:404", visible_from=1, visible_to=None, before_seq=None, limit=5
        )
        == []
    )


async def test_get_entry_returns_only_message_and_system_entries(stores: Stores) -> None:
    await create_group(stores.cross)
    sent = await send(stores.cross, 2, b"body")
    await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=2, now=NOW)

    assert await stores.cross.get_entry(GROUP, 2) == sent
    assert await stores.cross.get_entry(GROUP, 0) is None
    assert await stores.cross.get_entry(GROUP, 3) is None
    assert await stores.cross.get_entry("g:404", 1) is None


# --- receipts: read_counts and readers -------------------------------------------------------


async def build_big_group(cross: CrossDomainStore) -> None:
    """30 members with varied read positions.

    seq 1 create (members 1..30) | 2 message from 1 | 3 message from 2 | 4 add 31 |
    5 message from 3 | 30 reads to 5 | 6 remove 30 | 7 message from 31.
    Then 2..11 read to 7 and 12..21 to 3; 22..29 read nothing. Final read positions of the
    current members: 1 -> 2 (own message), 2..11 -> 7, 12..21 -> 3, 22..29 -> 0, 31 -> 7.
    """
    await create_group(cross, members=tuple(range(1, 31)))
    await send(cross, 1)
    await send(cross, 2)
    await change_members(cross, add(31))
    await send(cross, 3)
    await cross.mark_read(conv_id=GROUP, user_id=30, seq=5, now=NOW)
    await change_members(cross, remove(30))
    await send(cross, 31)
    for user_id in range(2, 12):
        await cross.mark_read(conv_id=GROUP, user_id=user_id, seq=7, now=NOW)
    for user_id in range(12, 22):
        await cross.mark_read(conv_id=GROUP, user_id=user_id, seq=3, now=NOW)


async def test_read_counts_in_a_30_member_group_exclude_sender_departed_and_later_joiners(
    stores: Stores,
) -> None:
    await build_big_group(stores.cross)

    counts = await stores.cross.read_counts(GROUP, [2, 3, 5, 7])

    assert counts == [
        # 2..29 see it (31 joined later, 30 left): 2..21 read it.
        ReadCount(seq=2, read=20, unread=8),
        # 1 and 3..29: 3..21 read it; 1 (read to 2) and 22..29 did not.
        ReadCount(seq=3, read=19, unread=9),
        # 1, 2, 4..29, 31: 2, 4..11 and 31 read it.
        ReadCount(seq=5, read=10, unread=19),
        # 1..29: 2..11 read it.
        ReadCount(seq=7, read=10, unread=19),
    ]


async def test_read_counts_skip_missing_and_non_message_seqs(stores: Stores) -> None:
    await build_big_group(stores.cross)

    counts = await stores.cross.read_counts(GROUP, [99, 4, 1, 5, 0])

    assert [c.seq for c in counts] == [5]
    assert await stores.cross.read_counts("g:404", [1, 2]) == []


async def test_readers_list_who_has_and_has_not_read_a_message_in_pages(stores: Stores) -> None:
    await build_big_group(stores.cross)

    have_read = await stores.cross.readers(GROUP, 5, read=True, after_user=0, limit=100)
    first = await stores.cross.readers(GROUP, 5, read=False, after_user=0, limit=5)
    rest = await stores.cross.readers(GROUP, 5, read=False, after_user=first[-1], limit=100)

    assert have_read == [2, 4, 5, 6, 7, 8, 9, 10, 11, 31]
    assert first == [1, 12, 13, 14, 15]
    assert rest == list(range(16, 30))
    assert await stores.cross.readers(GROUP, 2, read=True, after_user=0, limit=100) == list(
        range(2, 22)
    )
    assert await stores.cross.readers(GROUP, 7, read=False, after_user=20, limit=3) == [21, 22, 23]


# --- counters and housekeeping ---------------------------------------------------------------


async def test_next_group_number_never_hands_out_a_number_twice(stores: Stores) -> None:
    numbers = [await stores.cross.next_group_number() for _ in range(5)]

    assert len(set(numbers)) == 5
    assert numbers == sorted(numbers)


async def test_prune_idempotency_forgets_only_keys_recorded_before_the_cutoff(
    stores: Stores,
) -> None:
    await create_group(stores.cross)
    old = await send(stores.cross, 2, ts=NOW, idempotency=key(2, "old"))
    await send(stores.cross, 2, ts=NOW + 10, idempotency=key(2, "new"))

    assert await stores.cross.prune_idempotency(older_than=NOW + 10) == 1
    assert await stores.cross.prune_idempotency(older_than=NOW + 10) == 0

    # The forgotten key is new again: another fingerprint is no conflict, and it appends.
    reused = await send(stores.cross, 2, ts=NOW + 20, idempotency=key(2, "old", b"fp-2"))
    assert reused.stream > old.stream
    with pytest.raises(IdempotencyConflict):
        await send(stores.cross, 2, ts=NOW + 20, idempotency=key(2, "new", b"fp-2"))


# --- O4: deleting an organisation's own conversations by id prefix ---------------------------


async def test_o4_delete_conversations_by_prefix_in_batches_until_none_is_left(
    stores: Stores,
) -> None:
    """Used by dissolution on the organisation conversations store: ``o:7:`` goes, in
    batches that resume after a crash, and ``o:70:`` (a prefix that is not a whole id
    segment of ``o:7:``) and every other conversation stay."""
    store = stores.org_conversations
    doomed, kept = "o:7:g:1", "o:70:g:2"
    await create_group(store, (1, 2, 3), conv_id=doomed)
    await create_group(store, (1, 4), conv_id=kept)
    for n in range(5):
        await send(store, 1, f"m{n}".encode(), conv_id=doomed, idempotency=key(1, f"c{n}"))
    await store.append(
        NewEntry(conv_id=doomed, kind="message", sender=2, ts=NOW, body=b"x", effects=("copy",))
    )
    await send(store, 4, b"stays", conv_id=kept)

    batches = []
    while (deleted := await store.delete_conversations("o:7:", limit=3)) > 0:
        batches.append(deleted)
        assert len(batches) < 50, "never finished"
    assert sum(batches) >= 7 + 3 + 1  # entries, members, the conversation
    assert await store.get_conversation(doomed) is None
    assert await store.get_member(doomed, 1) is None
    assert (
        await store.history(doomed, visible_from=1, visible_to=None, before_seq=None, limit=50)
        == []
    )
    assert [e.conv_id for e in await store.entries_for(2, after=0, limit=50)] == []
    assert await store.pending_effects(after=0, limit=10) == []
    assert all(m.conv_id != doomed for m in await store.memberships(1))
    # The idempotency keys of deleted messages are gone with them: a key is usable again.
    reused = await send(store, 1, b"new", conv_id=kept, idempotency=key(1, "c0"))
    assert reused.body == b"new"
    # The other organisation's conversation is whole.
    assert await store.get_conversation(kept) is not None
    texts = [e.body for e in await store.entries_for(4, after=0, limit=50) if e.kind == "message"]
    assert texts == [b"stays", b"new"]
    assert await store.delete_conversations("o:7:", limit=3) == 0


async def test_o4_count_conversations_by_prefix(stores: Stores) -> None:
    store = stores.org_conversations
    for conv_id in ("o:7:g:1", "o:7:g:2", "o:70:g:3"):
        await create_group(store, (1, 2), conv_id=conv_id)
    assert await store.count_conversations("o:7:") == 2
    assert await store.count_conversations("o:70:") == 1
    assert await store.count_conversations("o:8:") == 0
