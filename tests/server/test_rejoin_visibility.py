"""The visibility rule of a member added back to a group that hides its history (M1): the
union of their memberships' ranges (``Member.ranges``), as ``Member.sees`` answers it and
the policy module applies it. The stores and services are checked end to end by
``tests/storage/test_rejoin_conformance.py`` and ``tests/server/test_delivery_fuzz.py``.
"""

from __future__ import annotations

import pytest

from protocol.errors import ErrorCode, ProtocolError
from server import policy
from storage.records import Entry, Member

#: In from seq 1, left at 4; added back at 7 and left at 9; added back again at 12.
REJOINED = Member(
    conv_id="g:1", user_id=3, role="member", visible_from=12, read_seq=2, earlier=((1, 4), (7, 9))
)


def message(seq: int, sender: int = 1) -> Entry:
    return Entry(stream=seq, conv_id="g:1", seq=seq, kind="message", sender=sender, ts=0)


def test_a_rejoined_member_sees_every_range_and_nothing_between() -> None:
    assert REJOINED.ranges == ((1, 4), (7, 9), (12, None))
    seen = [seq for seq in range(0, 16) if REJOINED.sees(seq)]
    assert seen == [1, 2, 3, 4, 7, 8, 9, 12, 13, 14, 15]


def test_a_departed_member_sees_up_to_where_they_left_in_each_range() -> None:
    departed = Member(
        conv_id="g:1", user_id=3, role="member", visible_from=7, left_seq=9, earlier=((1, 4),)
    )
    assert [seq for seq in range(0, 12) if departed.sees(seq)] == [1, 2, 3, 4, 7, 8, 9]
    assert departed.ranges == ((1, 4), (7, 9))


def test_first_seen_after_skips_the_gaps() -> None:
    """Where the messages a read position moving from ``seq`` passes over begin: receipts
    are marked from there, never from a seq the member could not see."""
    assert REJOINED.first_seen_after(0) == 1
    assert REJOINED.first_seen_after(2) == 3
    assert REJOINED.first_seen_after(4) == 7  # 5 and 6: away
    assert REJOINED.first_seen_after(5) == 7
    assert REJOINED.first_seen_after(9) == 12
    assert REJOINED.first_seen_after(20) == 21  # the current range is open
    departed = Member(conv_id="g:1", user_id=3, role="member", visible_from=7, left_seq=9)
    assert departed.first_seen_after(9) is None
    assert departed.first_seen_after(3) == 7


def test_one_membership_reads_as_before() -> None:
    joined = Member(conv_id="g:1", user_id=3, role="member", visible_from=5)
    assert joined.ranges == ((5, None),)
    assert [seq for seq in range(0, 8) if joined.sees(seq)] == [5, 6, 7]
    assert joined.first_seen_after(0) == 5


@pytest.mark.parametrize(("seq", "reportable"), [(3, True), (8, True), (5, False), (10, False)])
def test_c1_a_rejoined_member_reports_what_they_saw_and_only_that(
    seq: int, reportable: bool
) -> None:
    """C1 reports: a message from an earlier membership can be reported; one posted while
    the reporter was away does not exist for them (``not_found``, as any unseen message)."""
    if reportable:
        assert policy.may_report_message(reporter=3, member=REJOINED, entry=message(seq)).seq == seq
        return
    with pytest.raises(ProtocolError) as caught:
        policy.may_report_message(reporter=3, member=REJOINED, entry=message(seq))
    assert caught.value.code == ErrorCode.NOT_FOUND
