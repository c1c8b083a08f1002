"""Conformance of every ``CrossDomainStore`` backend: a member who leaves (or is removed from)
a group that hides its history and is added back keeps every range they saw (M1).

Before, a membership kept one range and the add replaced it: sync, unread counts, receipts
and recalls forgot what the earlier membership could see. Each test builds on the same
timeline (``rejoined``) and checks one reader of the visibility rule of ``CrossDomainStore``
against the union of the member's ranges, and that nothing said while they were away shows.
"""

from __future__ import annotations

from storage.interfaces import CrossDomainStore
from storage.records import ReadCount
from storage.stores import Stores
from tests.storage.test_cross_conformance import (
    GROUP,
    NOW,
    add,
    change_members,
    create_group,
    kinds_and_seqs,
    remove,
    send,
    seqs,
)

#: User 3's ranges on the ``rejoined`` timeline: 1-4, then 7 on.
EARLIER = ((1, 4),)


async def rejoined(cross: CrossDomainStore, *, conv_id: str = GROUP) -> None:
    """seq 1 create (1, 2, 3) | 2 message from 1 | 3 message from 2 | 3 reads to 2 |
    4 remove 3 | 5 message from 1 (3 away) | 6 message from 2 (3 away) | 7 add 3 |
    8 message from 1."""
    await create_group(cross, members=(1, 2, 3), conv_id=conv_id)
    await send(cross, 1, b"seen", conv_id=conv_id)
    await send(cross, 2, b"seen, unread", conv_id=conv_id)
    await cross.mark_read(conv_id=conv_id, user_id=3, seq=2, now=NOW)
    await change_members(cross, remove(3), conv_id=conv_id)
    await send(cross, 1, b"while away", conv_id=conv_id)
    await send(cross, 2, b"while away", conv_id=conv_id)
    await change_members(cross, add(3), conv_id=conv_id)
    await send(cross, 1, b"after", conv_id=conv_id)


async def test_a_readded_member_keeps_the_range_of_their_earlier_membership(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)

    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None
    assert (member.visible_from, member.left_seq, member.read_seq) == (7, None, 2)
    assert member.earlier == EARLIER
    assert member.ranges == ((1, 4), (7, None))
    assert [m.earlier for m in await stores.cross.memberships(3)] == [EARLIER]
    [listed] = [m for m in await stores.cross.list_members(GROUP, after_user=2, limit=5)]
    assert listed.earlier == EARLIER
    # Only one who was away has earlier ranges.
    first = await stores.cross.get_member(GROUP, 1)
    assert first is not None and first.earlier == ()


async def test_every_membership_adds_a_range_and_history_from_start_covers_them_all(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)
    await change_members(stores.cross, remove(3))  # seq 9
    await send(stores.cross, 1)  # seq 10
    await change_members(stores.cross, add(3))  # seq 11

    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None
    assert member.ranges == ((1, 4), (7, 9), (11, None))
    seen = await stores.cross.entries_for(3, after=0, limit=50)
    assert seqs(seen) == [1, 2, 3, 2, 4, 7, 8, 9, 11]  # the second 2: their read entry

    await change_members(stores.cross, remove(3))  # seq 12
    await change_members(stores.cross, add(3, history_from_start=True))  # seq 13: sees from 1
    member = await stores.cross.get_member(GROUP, 3)
    assert member is not None
    assert member.ranges == ((1, None),)


async def test_entries_for_shows_every_earlier_range_and_nothing_from_the_gap(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)
    await stores.cross.recall(conv_id=GROUP, seq=2, by=1, now=NOW)  # seen earlier: shown
    await stores.cross.recall(conv_id=GROUP, seq=5, by=1, now=NOW)  # from the gap: hidden

    seen = await stores.cross.entries_for(3, after=0, limit=50)

    assert kinds_and_seqs(seen) == [
        ("system", 1),
        ("message", 2),
        ("message", 3),
        ("read", 2),  # their own read position, written during the earlier membership
        ("system", 4),
        ("system", 7),
        ("message", 8),
        ("recall", 2),
    ]
    assert seen[1].recalled and seen[1].body is None
    # Paged from the middle of the earlier range, the rest follows without a gap.
    assert kinds_and_seqs(await stores.cross.entries_for(3, after=seen[3].stream, limit=2)) == [
        ("system", 4),
        ("system", 7),
    ]


async def test_unread_counts_the_earlier_ranges_above_the_read_position_not_the_gap(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)

    [summary] = await stores.cross.summaries(3, changed_after=0)
    assert summary.unread == 2  # seq 3 (earlier, unread) and 8; not 5 and 6
    assert summary.last_message is not None and summary.last_message.seq == 8
    assert summary.member.earlier == EARLIER

    moved = await stores.cross.mark_read(conv_id=GROUP, user_id=3, seq=3, now=NOW)
    assert (moved.read_seq, moved.unread) == (3, 1)
    await stores.cross.recall(conv_id=GROUP, seq=8, by=1, now=NOW)
    [summary] = await stores.cross.summaries(3, changed_after=0)
    assert summary.unread == 0


async def test_joined_after_leaves_out_members_who_saw_the_message_earlier(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)
    await change_members(stores.cross, add(5))  # seq 9: never a member before

    assert await stores.cross.joined_after(GROUP, 2) == [5]  # 3 saw seq 2
    assert await stores.cross.joined_after(GROUP, 5) == [3, 5]  # 3 was away
    assert await stores.cross.joined_after(GROUP, 8) == [5]


async def test_receipts_count_a_rejoined_member_where_they_see_with_their_kept_position(
    stores: Stores,
) -> None:
    await rejoined(stores.cross)

    # seq 2 (from 1): 2 and 3 see it; 3 read it before leaving, 2 read it by sending seq 3.
    # seq 3 (from 2): 1 and 3 see it; 1 read it by sending seq 5, 3 has not read it.
    # seq 5 (from 1): only 2 sees it (3 was away) and read it by sending seq 6.
    assert await stores.cross.read_counts(GROUP, [2, 3, 5, 8]) == [
        ReadCount(seq=2, read=2, unread=0),
        ReadCount(seq=3, read=1, unread=1),
        ReadCount(seq=5, read=1, unread=0),
        ReadCount(seq=8, read=0, unread=2),
    ]
    assert await stores.cross.readers(GROUP, 2, read=True, after_user=0, limit=10) == [2, 3]
    assert await stores.cross.readers(GROUP, 3, read=False, after_user=0, limit=10) == [3]
    assert await stores.cross.readers(GROUP, 5, read=True, after_user=0, limit=10) == [2]
    assert await stores.cross.readers(GROUP, 5, read=False, after_user=0, limit=10) == []


async def test_a_rejoined_sender_still_counts_out_of_their_own_messages_audience(
    stores: Stores,
) -> None:
    """3 wrote seq 2, left and came back: the counts of seq 2 are about 1 and 2 only."""
    await create_group(stores.cross, members=(1, 2, 3))
    await send(stores.cross, 3)  # seq 2
    await change_members(stores.cross, remove(3))  # seq 3
    await change_members(stores.cross, add(3))  # seq 4
    await stores.cross.mark_read(conv_id=GROUP, user_id=2, seq=4, now=NOW)

    assert await stores.cross.read_counts(GROUP, [2]) == [ReadCount(seq=2, read=1, unread=1)]
    assert await stores.cross.readers(GROUP, 2, read=False, after_user=0, limit=10) == [1]


async def test_o4_deleting_a_conversation_deletes_the_earlier_ranges_with_it(
    stores: Stores,
) -> None:
    """A conversation made again under a deleted one's id starts with no earlier ranges."""
    store = stores.org_conversations
    doomed = "o:7:g:1"
    await rejoined(store, conv_id=doomed)

    while await store.delete_conversations("o:7:", limit=2) > 0:
        pass
    await create_group(store, members=(1, 3), conv_id=doomed)

    member = await store.get_member(doomed, 3)
    assert member is not None and member.ranges == ((1, None),)
