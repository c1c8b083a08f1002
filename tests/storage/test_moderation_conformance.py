"""C1: the moderation store's contract (``storage.moderation``), for every backend; and the
personal store's ``set_suspended``."""

from __future__ import annotations

from pathlib import Path

from storage.moderation import NewAct, NewReport
from storage.stores import Stores


def message_report(reporter: int, *, seq: int = 3, conv: str = "g:1") -> NewReport:
    return NewReport(
        reporter=reporter,
        target_user=9,
        conv_id=conv,
        seq=seq,
        reason="spam",
        note="buy now",
        evidence=b"\x81\xa4text\xa3ads",
        created_at=1000,
    )


def user_report(reporter: int, target: int = 9) -> NewReport:
    return NewReport(reporter=reporter, target_user=target, reason="abuse", created_at=1001)


async def test_c1_reports_get_increasing_ids_and_keep_what_was_reported(stores: Stores) -> None:
    first, dup1 = await stores.moderation.add_report(message_report(1))
    second, dup2 = await stores.moderation.add_report(user_report(2))
    assert (first.report_id, second.report_id) == (1, 2) and not dup1 and not dup2
    assert first.status == "open" and first.closed_by_act is None
    assert (first.conv_id, first.seq, first.target_user, first.evidence) == (
        "g:1",
        3,
        9,
        b"\x81\xa4text\xa3ads",
    )
    assert (second.conv_id, second.seq, second.evidence) == (None, None, None)
    assert await stores.moderation.get_report(1) == first
    assert await stores.moderation.get_report(99) is None


async def test_c1_a_repeated_open_report_returns_the_first(stores: Stores) -> None:
    first, _ = await stores.moderation.add_report(message_report(1))
    again, duplicate = await stores.moderation.add_report(message_report(1))
    assert duplicate and again == first
    # Another reporter, another message, or a user report on the sender are new reports.
    other_reporter, d1 = await stores.moderation.add_report(message_report(2))
    other_message, d2 = await stores.moderation.add_report(message_report(1, seq=4))
    about_user, d3 = await stores.moderation.add_report(user_report(1))
    assert not (d1 or d2 or d3)
    assert len({first.report_id, other_reporter.report_id, other_message.report_id}) == 3
    assert about_user.report_id == 4
    assert (await stores.moderation.add_report(user_report(1)))[1]


async def test_c1_an_act_closes_the_open_reports_it_names(stores: Stores) -> None:
    one, _ = await stores.moderation.add_report(message_report(1))
    two, _ = await stores.moderation.add_report(message_report(2))
    act = await stores.moderation.record_act(
        NewAct(
            action="hide",
            operator="ops",
            reason="spam",
            target_user=9,
            conv_id="g:1",
            seq=3,
            evidence=b"body",
            report_ids=(one.report_id, two.report_id, 77),
            created_at=2000,
        )
    )
    assert act.act_id == 1 and act.report_ids == (1, 2, 77) and act.evidence == b"body"
    for report_id in (1, 2):
        closed = await stores.moderation.get_report(report_id)
        assert closed is not None
        assert (closed.status, closed.closed_by_act) == ("actioned", 1)
    dismissal = await stores.moderation.record_act(
        NewAct(action="dismiss", operator="ops", reason="x", report_ids=(1,), created_at=2001)
    )
    still = await stores.moderation.get_report(1)
    assert still is not None and still.closed_by_act == 1  # a closed report stays as it was
    assert dismissal.act_id == 2
    # After closing, the same target can be reported again.
    assert not (await stores.moderation.add_report(message_report(1)))[1]


async def test_c1_dismiss_marks_reports_dismissed(stores: Stores) -> None:
    report, _ = await stores.moderation.add_report(user_report(1))
    await stores.moderation.record_act(
        NewAct(action="dismiss", operator="ops", reason="fine", report_ids=(1,), created_at=5)
    )
    closed = await stores.moderation.get_report(report.report_id)
    assert closed is not None and closed.status == "dismissed"


async def test_c1_remove_erases_the_evidence_of_reports_on_that_message(stores: Stores) -> None:
    await stores.moderation.add_report(message_report(1, seq=3))
    await stores.moderation.add_report(message_report(2, seq=3))
    await stores.moderation.add_report(message_report(1, seq=4))
    await stores.moderation.record_act(
        NewAct(
            action="remove",
            operator="ops",
            reason="illegal",
            conv_id="g:1",
            seq=3,
            report_ids=(1,),
            created_at=3000,
        )
    )
    evidence = [
        (r.seq, r.evidence)
        for r in await stores.moderation.list_reports(status=None, after_id=0, limit=10)
    ]
    assert evidence == [(3, None), (3, None), (4, b"\x81\xa4text\xa3ads")]


async def test_c1_remove_erases_what_an_earlier_hide_kept_of_that_message(stores: Stores) -> None:
    """A ``hide`` keeps the message's words for review; a later ``remove`` of the same
    message must erase that copy too (the platform keeps none of removed content). Acts on
    other messages keep theirs."""

    def hide(seq: int, at: int) -> NewAct:
        return NewAct(
            action="hide",
            operator="ops",
            reason="spam",
            target_user=9,
            conv_id="g:1",
            seq=seq,
            evidence=f"words {seq}".encode(),
            created_at=at,
        )

    await stores.moderation.record_act(hide(3, 1000))
    await stores.moderation.record_act(hide(4, 1001))
    await stores.moderation.record_act(
        NewAct(
            action="remove", operator="ops", reason="illegal", conv_id="g:1", seq=3, created_at=2000
        )
    )
    acts = await stores.moderation.acts(after_id=0, limit=10)
    assert [(a.action, a.seq, a.evidence) for a in acts] == [
        ("hide", 3, None),
        ("hide", 4, b"words 4"),
        ("remove", 3, None),
    ]


async def test_c1_list_reports_filters_and_pages(stores: Stores) -> None:
    for reporter in range(1, 6):
        await stores.moderation.add_report(user_report(reporter))
    await stores.moderation.record_act(
        NewAct(action="suspend", operator="o", reason="r", report_ids=(2, 4), created_at=1)
    )
    listed = await stores.moderation.list_reports(status="open", after_id=0, limit=10)
    assert [r.report_id for r in listed] == [1, 3, 5]
    page = await stores.moderation.list_reports(status=None, after_id=1, limit=2)
    assert [r.report_id for r in page] == [2, 3]
    actioned = await stores.moderation.list_reports(status="actioned", after_id=0, limit=10)
    assert [r.report_id for r in actioned] == [2, 4]


async def test_c1_the_act_log_is_ordered_and_paged(stores: Stores) -> None:
    assert await stores.moderation.last_act_id() == 0
    for index, action in enumerate(("suspend", "unsuspend", "suspend")):
        await stores.moderation.record_act(
            NewAct(
                action=action,  # type: ignore[arg-type]
                operator=f"op{index}",
                reason="r",
                target_user=7,
                created_at=index,
            )
        )
    assert await stores.moderation.last_act_id() == 3
    acts = await stores.moderation.acts(after_id=1, limit=10)
    assert [(a.act_id, a.action, a.operator) for a in acts] == [
        (2, "unsuspend", "op1"),
        (3, "suspend", "op2"),
    ]
    assert [a.act_id for a in await stores.moderation.acts(after_id=0, limit=1)] == [1]


async def test_c1_set_suspended_sets_and_clears_the_flag(stores: Stores) -> None:
    user = await stores.personal.create_user(phone="+15550001", display_name="u", now=1)
    assert not user.suspended
    assert await stores.personal.set_suspended(user.user_id, True)
    found = await stores.personal.get_user(user.user_id)
    assert found is not None and found.suspended
    assert await stores.personal.set_suspended(user.user_id, False)
    found = await stores.personal.get_user(user.user_id)
    assert found is not None and not found.suspended
    assert not await stores.personal.set_suspended(user.user_id + 100, True)


async def test_c1_sqlite_reports_and_acts_survive_a_reopen(tmp_path: Path) -> None:
    from storage.sqlite import open_sqlite_stores

    async with open_sqlite_stores(tmp_path / "data") as stores:
        await stores.moderation.add_report(message_report(1))
        await stores.moderation.record_act(
            NewAct(action="hide", operator="o", reason="r", report_ids=(1,), created_at=1)
        )
    async with open_sqlite_stores(tmp_path / "data") as stores:
        report = await stores.moderation.get_report(1)
        assert report is not None and report.status == "actioned"
        assert await stores.moderation.last_act_id() == 1
    assert (tmp_path / "data" / "moderation.db").exists()
