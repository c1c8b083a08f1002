"""The policy module's decisions, without a server (D5: one place decides)."""

from __future__ import annotations

import msgspec
import pytest

from protocol.errors import ErrorCode, ProtocolError
from server import policy
from storage.records import Conversation, Entry, Member

GROUP = Conversation(
    conv_id="g:1",
    kind="group",
    title="t",
    owner_id=1,
    created_at=0,
    member_limit=3,
    member_count=2,
)


def member(user: int, role: str = "member", **kw: object) -> Member:
    return Member(conv_id="g:1", user_id=user, role=role, **kw)  # type: ignore[arg-type]


def code_of(call: object) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code


def test_direct_peer_only_for_participants_and_canonical_ids() -> None:
    assert policy.direct_peer(3, "d:3:7") == 7
    assert policy.direct_peer(7, "d:3:7") == 3
    assert policy.direct_peer(5, "s:5") == 5
    assert code_of(lambda: policy.direct_peer(4, "d:3:7")) == ErrorCode.NOT_FOUND
    assert code_of(lambda: policy.direct_peer(3, "d:7:3")) == ErrorCode.NOT_FOUND  # not canonical
    assert code_of(lambda: policy.direct_peer(4, "s:5")) == ErrorCode.NOT_FOUND


def test_m1_send_rules_in_groups() -> None:
    policy.may_send(conversation=GROUP, member=member(2), blocked_by_peer=False)
    assert (
        code_of(lambda: policy.may_send(conversation=GROUP, member=None, blocked_by_peer=False))
        == ErrorCode.NOT_FOUND
    )
    left = member(2, left_seq=5)
    assert (
        code_of(lambda: policy.may_send(conversation=GROUP, member=left, blocked_by_peer=False))
        == ErrorCode.NOT_FOUND
    )
    muted = member(2, muted=True)
    assert (
        code_of(lambda: policy.may_send(conversation=GROUP, member=muted, blocked_by_peer=False))
        == ErrorCode.MUTED
    )
    silenced = msgspec.structs.replace(GROUP, mute_all=True)
    assert (
        code_of(
            lambda: policy.may_send(conversation=silenced, member=member(2), blocked_by_peer=False)
        )
        == ErrorCode.MUTED
    )
    policy.may_send(conversation=silenced, member=member(1, "owner"), blocked_by_peer=False)
    policy.may_send(conversation=silenced, member=member(3, "admin"), blocked_by_peer=False)


def test_m5_blocked_single_chat() -> None:
    assert (
        code_of(lambda: policy.may_send(conversation=None, member=None, blocked_by_peer=True))
        == ErrorCode.BLOCKED
    )


def test_a1_a_single_chat_an_erased_account_left_takes_no_messages() -> None:
    chat = msgspec.structs.replace(GROUP, conv_id="d:1:2", kind="direct", member_count=2)
    policy.may_send(conversation=chat, member=member(1), blocked_by_peer=False)
    left = msgspec.structs.replace(chat, member_count=1)
    assert (
        code_of(lambda: policy.may_send(conversation=left, member=member(1), blocked_by_peer=False))
        == ErrorCode.NOT_FOUND
    )


def test_m4_recall_window_and_admins() -> None:
    entry = Entry(stream=9, conv_id="g:1", seq=4, kind="message", sender=2, ts=0)
    policy.may_recall(caller=2, member=member(2), entry=entry, now=policy.RECALL_WINDOW_MS)
    assert (
        code_of(
            lambda: policy.may_recall(
                caller=2, member=member(2), entry=entry, now=policy.RECALL_WINDOW_MS + 1
            )
        )
        == ErrorCode.RECALL_WINDOW_PASSED
    )
    assert (
        code_of(lambda: policy.may_recall(caller=3, member=member(3), entry=entry, now=1))
        == ErrorCode.FORBIDDEN
    )
    policy.may_recall(caller=1, member=member(1, "owner"), entry=entry, now=10**12)
    policy.may_recall(caller=3, member=member(3, "admin"), entry=entry, now=10**12)
    system = Entry(stream=1, conv_id="g:1", seq=1, kind="system", sender=1, ts=0)
    assert (
        code_of(lambda: policy.may_recall(caller=1, member=member(1, "owner"), entry=system, now=1))
        == ErrorCode.NOT_FOUND
    )


def test_group_roles() -> None:
    policy.may_manage("add", conversation=GROUP, actor=member(2))
    assert (
        code_of(lambda: policy.may_manage("remove", conversation=GROUP, actor=member(2)))
        == ErrorCode.FORBIDDEN
    )
    assert (
        code_of(lambda: policy.may_manage("transfer", conversation=GROUP, actor=member(3, "admin")))
        == ErrorCode.FORBIDDEN
    )
    policy.may_manage("transfer", conversation=GROUP, actor=member(1, "owner"))
    admin = member(3, "admin")
    policy.may_act_on(admin, member(2))
    assert code_of(lambda: policy.may_act_on(admin, member(4, "admin"))) == ErrorCode.FORBIDDEN
    assert code_of(lambda: policy.may_act_on(admin, member(1, "owner"))) == ErrorCode.FORBIDDEN
    assert code_of(lambda: policy.may_leave(member(1, "owner"))) == ErrorCode.INVALID_STATE


def test_m2_member_limit() -> None:
    policy.may_admit(GROUP, adding=1)
    assert code_of(lambda: policy.may_admit(GROUP, adding=2)) == ErrorCode.MEMBER_LIMIT


def test_read_entries_go_to_the_reader_in_groups_and_to_the_peer_in_single_chats() -> None:
    read = Entry(stream=5, conv_id="g:1", seq=3, kind="read", sender=2, ts=0)
    assert policy.entry_recipients(GROUP, read, [1, 2, 3], departed=()) == {2}
    direct = Conversation(
        conv_id="d:1:2", kind="direct", title="", owner_id=None, created_at=0, member_limit=2
    )
    read_direct = Entry(stream=5, conv_id="d:1:2", seq=3, kind="read", sender=2, ts=0)
    assert policy.entry_recipients(direct, read_direct, [1, 2], departed=()) == {1, 2}
    removal = Entry(stream=6, conv_id="g:1", seq=4, kind="system", sender=1, ts=0)
    assert policy.entry_recipients(GROUP, removal, [1, 3], departed=(2,)) == {1, 2, 3}


def test_d4_may_copy_needs_membership_and_consent_given_during_it() -> None:
    from storage.consent import ConsentChange

    def change(at: int, granted: bool) -> ConsentChange:
        return ConsentChange(user_id=5, org_id=1, granted=granted, at=at)

    spans = [(100, 200), (300, None)]
    consent = [change(110, True), change(150, False), change(310, True)]
    assert not policy.may_copy(spans=spans, consent=consent, at=105)  # before consenting
    assert policy.may_copy(spans=spans, consent=consent, at=120)
    assert not policy.may_copy(spans=spans, consent=consent, at=160)  # revoked
    assert not policy.may_copy(spans=spans, consent=consent, at=250)  # not a member
    assert policy.may_copy(spans=spans, consent=consent, at=320)
    # A grant from an earlier membership does not carry over to a new one.
    assert not policy.may_copy(spans=spans, consent=[change(110, True)], at=320)
    # Nor does one given before joining.
    assert not policy.may_copy(spans=[(300, None)], consent=[change(250, True)], at=320)
