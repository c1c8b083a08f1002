"""The live-stream decisions of the policy module (L1), without a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol import limits
from protocol.errors import ErrorCode, ProtocolError
from server import policy
from storage.records import Conversation, Member

GROUP = Conversation(
    conv_id="g:1", kind="group", title="t", owner_id=1, created_at=0, member_limit=50
)
MUTED_GROUP = Conversation(
    conv_id="g:1",
    kind="group",
    title="t",
    owner_id=1,
    created_at=0,
    member_limit=50,
    mute_all=True,
)
DIRECT = Conversation(
    conv_id="d:1:2", kind="direct", title="", owner_id=None, created_at=0, member_limit=2
)


def member(user: int, role: str = "member", **kw: Any) -> Member:
    return Member(conv_id="g:1", user_id=user, role=role, **kw)  # type: ignore[arg-type]


def code_of(call: Callable[[], object]) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        call()
    return caught.value.code


def test_l1_members_go_live_but_not_under_mute_all_nor_when_muted() -> None:
    assert policy.may_go_live(conversation=GROUP, member=member(2)).user_id == 2
    assert policy.may_go_live(conversation=MUTED_GROUP, member=member(1, "owner")).role == "owner"
    assert policy.may_go_live(conversation=MUTED_GROUP, member=member(3, "admin")).role == "admin"
    muted = ErrorCode.MUTED
    assert code_of(lambda: policy.may_go_live(conversation=MUTED_GROUP, member=member(2))) == muted
    assert (
        code_of(lambda: policy.may_go_live(conversation=GROUP, member=member(2, muted=True)))
        == muted
    )
    gone = member(2, left_seq=9)
    for conversation, who in ((GROUP, None), (GROUP, gone), (DIRECT, member(2)), (None, None)):
        assert (
            code_of(lambda c=conversation, m=who: policy.may_go_live(conversation=c, member=m))
            == ErrorCode.NOT_FOUND
        )


def test_l1_one_stream_per_group_and_a_bounded_number_of_links() -> None:
    policy.may_claim_live_groups([])
    assert code_of(lambda: policy.may_claim_live_groups(["g:4", "g:2"])) == (
        ErrorCode.LIVE_IN_PROGRESS
    )
    policy.may_link_live(linked=limits.MAX_LIVE_LINKED_GROUPS - 1, adding=1)
    assert (
        code_of(lambda: policy.may_link_live(linked=limits.MAX_LIVE_LINKED_GROUPS, adding=1))
        == ErrorCode.INVALID_STATE
    )


def test_l1_who_may_watch_and_the_host_resumes_instead() -> None:
    policy.may_watch_live(is_host=False, member_of_groups=True, invited=False, removed=False)
    policy.may_watch_live(is_host=False, member_of_groups=False, invited=True, removed=False)
    for kw in (
        {"member_of_groups": False, "invited": False, "removed": False},
        {"member_of_groups": True, "invited": True, "removed": True},
    ):
        assert (
            code_of(lambda kw=kw: policy.may_watch_live(is_host=False, **kw)) == ErrorCode.NOT_FOUND
        )
    assert (
        code_of(
            lambda: policy.may_watch_live(
                is_host=True, member_of_groups=True, invited=False, removed=False
            )
        )
        == ErrorCode.INVALID_STATE
    )


def test_l1_host_only_ops_hide_the_stream_from_those_who_cannot_see_it() -> None:
    policy.may_host_live(caller=1, host=1, visible=False)
    assert code_of(lambda: policy.may_host_live(caller=2, host=1, visible=True)) == (
        ErrorCode.FORBIDDEN
    )
    assert code_of(lambda: policy.may_host_live(caller=2, host=1, visible=False)) == (
        ErrorCode.NOT_FOUND
    )


def test_l1_the_host_or_the_origin_groups_owner_and_admins_end() -> None:
    assert policy.may_end_live(caller=1, host=1, origin_member=None, visible=True) == "host"
    for role in ("owner", "admin"):
        assert (
            policy.may_end_live(caller=2, host=1, origin_member=member(2, role), visible=True)
            == "admin"
        )
    for who, visible, code in (
        (member(2), True, ErrorCode.FORBIDDEN),
        (member(2, "admin", left_seq=3), True, ErrorCode.FORBIDDEN),
        (None, True, ErrorCode.FORBIDDEN),
        (None, False, ErrorCode.NOT_FOUND),
    ):
        assert (
            code_of(
                lambda w=who, v=visible: policy.may_end_live(
                    caller=2, host=1, origin_member=w, visible=v
                )
            )
            == code
        )


def test_l1_participants_hands_and_cohost_limit() -> None:
    assert policy.may_take_part("viewer") == "viewer"
    assert code_of(lambda: policy.may_take_part(None)) == ErrorCode.NOT_FOUND
    policy.may_leave_live("cohost")
    assert code_of(lambda: policy.may_leave_live("host")) == ErrorCode.INVALID_STATE
    policy.may_raise_hand("viewer")
    for role in ("host", "cohost"):
        assert code_of(lambda r=role: policy.may_raise_hand(r)) == ErrorCode.INVALID_STATE  # type: ignore[arg-type]
    # A viewer device of a user with another device on stage is on stage too.
    assert (
        code_of(lambda: policy.may_raise_hand("viewer", user_on_stage=True))
        == ErrorCode.INVALID_STATE
    )
    policy.may_answer_hand(raised=True, accept=True, cohosts=3, max_cohosts=4)
    policy.may_answer_hand(raised=True, accept=False, cohosts=4, max_cohosts=4)
    assert (
        code_of(lambda: policy.may_answer_hand(raised=True, accept=True, cohosts=4, max_cohosts=4))
        == ErrorCode.COHOST_LIMIT
    )
    assert (
        code_of(
            lambda: policy.may_answer_hand(raised=False, accept=False, cohosts=0, max_cohosts=4)
        )
        == ErrorCode.INVALID_STATE
    )
    policy.may_remove_from_live(host=1, target=2, present=True)
    assert code_of(lambda: policy.may_remove_from_live(host=1, target=1, present=True)) == (
        ErrorCode.INVALID_STATE
    )
    assert code_of(lambda: policy.may_remove_from_live(host=1, target=2, present=False)) == (
        ErrorCode.NOT_FOUND
    )
    policy.may_invite_live(invited=limits.MAX_LIVE_INVITES - 2, adding=2)
    assert code_of(lambda: policy.may_invite_live(invited=limits.MAX_LIVE_INVITES, adding=1)) == (
        ErrorCode.INVALID_STATE
    )


def test_l1_signals_only_between_participants_one_of_them_on_stage() -> None:
    policy.may_signal(sender="viewer", target="host", same_device=False)
    policy.may_signal(sender="cohost", target="viewer", same_device=False)
    policy.may_signal(sender="host", target="cohost", same_device=False)
    for sender, target, same in (
        (None, "host", False),
        ("viewer", None, False),
        ("viewer", "viewer", False),
        ("host", "host", True),
    ):
        assert (
            code_of(
                lambda s=sender, t=target, d=same: policy.may_signal(
                    sender=s, target=t, same_device=d
                )
            )
            == ErrorCode.NOT_FOUND
        )


def test_l1_started_and_ended_reach_groups_invited_and_participants() -> None:
    assert policy.live_audience(members=[1, 2], invited=[9], participants=[2, 7]) == {1, 2, 7, 9}
