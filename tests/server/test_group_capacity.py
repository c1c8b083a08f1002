"""M2 group capacity without a network: the policy decisions (effective limit, who may
expand, tiers) and the ops (``group.expand``, ``org.group_topup``, ``org.group_package``)
through the router on the memory stores, with an injected manual clock for lapses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocol import group_capacity as pg
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import ErrorCode, ProtocolError
from server import policy
from server.clock import ManualClock
from server.config import Config
from storage.group_capacity import GroupExpansion
from storage.memory import open_memory_stores
from storage.orgs import OrgMember
from storage.records import Conversation, Member
from tests.server.routers import build_router
from tests.server.test_ding import FlakyNotifier, User, World

DAY = 86_400
TIERS = {"group_member_tiers": (3, 5, 8), "group_tier_prices": (2, 5), "group_expansion_days": 30}


def _expansion(limit: int, expires_at: int, org_id: int = 1) -> GroupExpansion:
    return GroupExpansion(
        org_id=org_id,
        conv_id="g:1",
        member_limit=limit,
        expires_at=expires_at,
        paid_by=1,
        updated_at=0,
    )


def test_m2_effective_limit_is_the_largest_expansion_that_has_not_lapsed() -> None:
    assert policy.effective_member_limit(3, [], now=100) == (3, None)
    expansions = [_expansion(5, 300), _expansion(8, 200), _expansion(8, 250, org_id=2)]
    assert policy.effective_member_limit(3, expansions, now=100) == (8, 250)
    assert policy.effective_member_limit(3, expansions, now=250) == (5, 300)  # 8 lapsed
    assert policy.effective_member_limit(3, expansions, now=300) == (3, None)  # all lapsed
    # An expansion to a tier at or below the base never lowers or "sets" anything.
    assert policy.effective_member_limit(10, expansions, now=100) == (10, None)


def test_m2_may_admit_judges_against_the_limit_passed_in() -> None:
    group = Conversation(
        conv_id="g:1",
        kind="group",
        title="t",
        owner_id=1,
        created_at=0,
        member_limit=3,
        member_count=5,
    )
    policy.may_admit(group, adding=3, limit=8)
    with pytest.raises(ProtocolError) as refused:
        policy.may_admit(group, adding=1, limit=5)
    assert refused.value.code == ErrorCode.MEMBER_LIMIT
    with pytest.raises(ProtocolError):
        policy.may_admit(group, adding=1)  # the base limit, already exceeded: nobody new


def test_m2_who_may_expand_and_to_what() -> None:
    group = Conversation(
        conv_id="g:1", kind="group", title="t", owner_id=7, created_at=0, member_limit=3
    )
    in_group = Member(conv_id="g:1", user_id=7, role="owner")
    member = OrgMember(org_id=4, user_id=7, role="member")
    assert policy.may_expand_group(7, conversation=group, group_member=in_group, org_member=member)
    admin = OrgMember(org_id=4, user_id=9, role="admin", permissions=frozenset({"members"}))
    joined = Member(conv_id="g:1", user_id=9, role="member")
    policy.may_expand_group(9, conversation=group, group_member=joined, org_member=admin)
    cases: list[tuple[int, Member | None, OrgMember | None, ErrorCode]] = [
        (9, joined, OrgMember(org_id=4, user_id=9, role="member"), ErrorCode.FORBIDDEN),
        (9, None, admin, ErrorCode.NOT_FOUND),  # not in the group
        (7, in_group, None, ErrorCode.NOT_FOUND),  # not in the organisation
    ]
    for caller, group_member, org_member, code in cases:
        with pytest.raises(ProtocolError) as refused:
            policy.may_expand_group(
                caller, conversation=group, group_member=group_member, org_member=org_member
            )
        assert refused.value.code == code
    assert policy.expansion_price({5: 2, 8: 5}, 8) == 5
    for tier in (3, 4, 10):
        with pytest.raises(ProtocolError) as refused:
            policy.expansion_price({5: 2, 8: 5}, tier)
        assert (refused.value.code, refused.value.path) == (ErrorCode.NOT_A_TIER, "$.tier")
        assert "5, 8" in refused.value.message


# --- the ops ------------------------------------------------------------------------------------


@asynccontextmanager
async def world(tmp_path: Path, clock: ManualClock) -> AsyncIterator[World]:
    config = Config(store="memory", data_dir=tmp_path).with_overrides(**TIERS)
    notifier = FlakyNotifier(clock=clock)
    async with open_memory_stores() as stores:
        router = build_router(config, stores, clock=clock, notifier=notifier)
        yield World(router=router, ctx=router.ctx, notifier=notifier)


async def _org_with(w: World, admin: User, *members: User) -> int:
    created = await w.ok(admin, po.OrgCreate(rid=0, name="Acme"))
    org: int = created["org"]["org"]
    for member in members:
        invited = await w.ok(admin, po.OrgInvite(rid=0, org=org, user=member.user_id))
        request_id = invited["request"]["request_id"]
        await w.ok(member, po.OrgAnswer(rid=0, org=org, request_id=request_id, accept=True))
    return org


async def _error(w: World, user: User, request: rq.Request) -> int:
    reply = await w.call(user, request)
    assert reply["op"] == "error", reply
    code: int = reply["code"]
    return code


async def _add(w: World, user: User, conv: str, *users: User) -> dict[str, Any]:
    return await w.call(user, rq.GroupAdd(rid=0, conv=conv, users=[u.user_id for u in users]))


async def _info(w: World, user: User, conv: str) -> dict[str, Any]:
    shown = await w.ok(user, rq.GroupInfo(rid=0, conv=conv))
    return shown["conv"]  # type: ignore[no-any-return]


async def test_m2_expansion_admits_up_to_the_tier_then_lapses_keeping_members(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with world(tmp_path, clock) as w:
        admin, owner, bob = [await w.new_user(n) for n in ("Admin", "Owner", "Bob")]
        fillers = [await w.new_user(f"F{i}") for i in range(6)]
        org = await _org_with(w, admin, owner, bob)
        created = await w.ok(
            owner, rq.GroupCreate(rid=0, cmid="g", title="Big", members=[bob.user_id])
        )
        conv = created["conv"]["conv"]
        assert (await _add(w, owner, conv, fillers[0]))["op"] == "ok"  # 3 of the base 3
        assert (await _add(w, owner, conv, fillers[1]))["code"] == ErrorCode.MEMBER_LIMIT

        topup = pg.OrgGroupTopup(rid=0, org=org, units=9, cmid="po-1")
        topped = await w.ok(admin, topup)
        assert (topped["package"]["remaining"], topped["duplicate"]) == (9, False)
        again = await w.ok(admin, topup)  # a resend after a lost reply adds nothing
        assert (again["package"]["granted"], again["duplicate"]) == (9, True)
        conflict = pg.OrgGroupTopup(rid=0, org=org, units=10, cmid="po-1")
        assert await _error(w, admin, conflict) == ErrorCode.IDEMPOTENCY_CONFLICT

        now = clock.now_ms()
        expand = pg.GroupExpand(rid=0, conv=conv, org=org, tier=5, cmid="x1")
        expanded = await w.ok(owner, expand)
        expires = now + 30 * DAY * 1000
        assert (expanded["tier"], expanded["expires_at"], expanded["paid"]) == (5, expires, 2)
        assert (expanded["conv"]["member_limit"], expanded["conv"]["expansion_expires_at"]) == (
            5,
            expires,
        )
        resent = await w.ok(owner, expand)
        assert (resent["duplicate"], resent["paid"], resent["expires_at"]) == (True, 0, expires)
        # Admits up to the tier, then refuses with the ordinary member-limit error.
        assert (await _add(w, bob, conv, fillers[1], fillers[2]))["op"] == "ok"  # 5 of 5
        assert (await _add(w, owner, conv, fillers[3]))["code"] == ErrorCode.MEMBER_LIMIT
        shown = await _info(w, bob, conv)
        assert (shown["member_count"], shown["member_limit"]) == (5, 5)
        assert shown["expansion_expires_at"] == expires

        # Lapsed: every member stays, nobody new gets in, the base limit shows again.
        clock.advance(30 * DAY)
        shown = await _info(w, bob, conv)
        assert (shown["member_count"], shown["member_limit"]) == (5, 3)
        assert shown["expansion_expires_at"] is None
        members = await w.ok(bob, rq.GroupMembers(rid=0, conv=conv))
        assert len(members["members"]) == 5
        assert (await _add(w, owner, conv, fillers[3]))["code"] == ErrorCode.MEMBER_LIMIT
        await w.ok(owner, rq.GroupRemove(rid=0, conv=conv, user=fillers[0].user_id))
        assert (await _add(w, owner, conv, fillers[0]))["code"] == ErrorCode.MEMBER_LIMIT

        # Renewing after the lapse starts a new period from now; before, it extends.
        renewed = await w.ok(owner, pg.GroupExpand(rid=0, conv=conv, org=org, tier=5, cmid="x2"))
        assert renewed["expires_at"] == clock.now_ms() + 30 * DAY * 1000
        clock.advance(DAY)
        extended = await w.ok(owner, pg.GroupExpand(rid=0, conv=conv, org=org, tier=5, cmid="x3"))
        assert extended["expires_at"] == renewed["expires_at"] + 30 * DAY * 1000
        assert (await _add(w, owner, conv, fillers[0]))["op"] == "ok"

        # 9 - 3 * 2 = 3 left: the tier 8 (5 units) is refused and changes nothing.
        too_dear = pg.GroupExpand(rid=0, conv=conv, org=org, tier=8, cmid="x4")
        assert await _error(w, owner, too_dear) == ErrorCode.PACKAGE_EXHAUSTED
        package = await w.ok(admin, pg.OrgGroupPackage(rid=0, org=org))
        assert (package["granted"], package["used"], package["remaining"]) == (9, 6, 3)
        assert package["members"] == [{"user": owner.user_id, "used": 6}]
        assert package["tiers"] == [
            {"member_limit": 5, "price": 2},
            {"member_limit": 8, "price": 5},
        ]
        assert (await _info(w, owner, conv))["member_limit"] == 5

        audit = await w.ok(admin, po.AdminAudit(rid=0, org=org))
        assert [(e["action"], e["target"]) for e in audit["entries"]] == [
            ("invite", f"user:{owner.user_id}"),
            ("invite", f"user:{bob.user_id}"),
            ("group_topup", "group:9"),
        ]


async def test_m2_not_a_tier_and_who_is_refused(tmp_path: Path) -> None:
    clock = ManualClock()
    async with world(tmp_path, clock) as w:
        admin, owner, bob, outsider = [
            await w.new_user(n) for n in ("Admin", "Owner", "Bob", "Out")
        ]
        org = await _org_with(w, admin, owner, bob)
        created = await w.ok(
            owner,
            rq.GroupCreate(rid=0, cmid="g", title="G", members=[bob.user_id, outsider.user_id]),
        )
        conv = created["conv"]["conv"]
        await w.ok(admin, pg.OrgGroupTopup(rid=0, org=org, units=100, cmid="t"))

        def expand(tier: int = 5, cmid: str = "x", org_id: int = org) -> pg.GroupExpand:
            return pg.GroupExpand(rid=0, conv=conv, org=org_id, tier=tier, cmid=cmid)

        for tier in (3, 4, 6):  # the base limit is not an expansion tier either
            reply = await w.call(owner, expand(tier))
            assert (reply["code"], reply["path"]) == (ErrorCode.NOT_A_TIER, "$.tier")
        assert await _error(w, owner, expand(20_000)) == ErrorCode.INVALID_FIELD  # > 10,000
        assert await _error(w, bob, expand()) == ErrorCode.FORBIDDEN  # not the owner
        # The outsider owns nothing here and is no member of the organisation.
        assert await _error(w, outsider, expand()) == ErrorCode.NOT_FOUND
        assert await _error(w, owner, expand(org_id=org + 1)) == ErrorCode.NOT_FOUND
        # An admin (with 'members') who is not in the group: as if the group did not exist.
        assert await _error(w, admin, expand()) == ErrorCode.NOT_FOUND
        absent = pg.GroupExpand(rid=0, conv="g:999", org=org, tier=5, cmid="x")
        assert await _error(w, owner, absent) == ErrorCode.NOT_FOUND
        # Top-ups and the package are for admins with 'members' only.
        assert await _error(w, bob, pg.OrgGroupTopup(rid=0, org=org, units=1, cmid="b")) == (
            ErrorCode.FORBIDDEN
        )
        assert await _error(w, outsider, pg.OrgGroupPackage(rid=0, org=org)) == (
            ErrorCode.NOT_FOUND
        )
        package = await w.ok(admin, pg.OrgGroupPackage(rid=0, org=org))
        assert (package["used"], package["members"]) == (0, [])


async def test_m2_an_admin_in_the_group_expands_it_for_the_organisation(tmp_path: Path) -> None:
    clock = ManualClock()
    async with world(tmp_path, clock) as w:
        admin, owner, stranger = [await w.new_user(n) for n in ("Admin", "Owner", "Stranger")]
        org = await _org_with(w, admin)
        # The owner is no member of the organisation; its admin is in the group.
        created = await w.ok(
            owner, rq.GroupCreate(rid=0, cmid="g", title="G", members=[admin.user_id])
        )
        conv = created["conv"]["conv"]
        await w.ok(admin, pg.OrgGroupTopup(rid=0, org=org, units=5, cmid="t"))
        expanded = await w.ok(admin, pg.GroupExpand(rid=0, conv=conv, org=org, tier=8, cmid="a"))
        assert (expanded["conv"]["member_limit"], expanded["paid"]) == (8, 5)
        package = await w.ok(admin, pg.OrgGroupPackage(rid=0, org=org))
        assert (package["remaining"], package["members"]) == (
            0,
            [{"user": admin.user_id, "used": 5}],
        )
        audit = await w.ok(admin, po.AdminAudit(rid=0, org=org))
        assert [(e["action"], e["target"]) for e in audit["entries"]][-1] == (
            "group_expand",
            "tier:8",
        )
        assert conv not in str(audit)  # the audit log never names the cross-domain group
        assert (await _add(w, owner, conv, stranger))["op"] == "ok"
        # Exhausted: a clear error, no silent effect.
        again = pg.GroupExpand(rid=0, conv=conv, org=org, tier=5, cmid="b")
        assert await _error(w, admin, again) == ErrorCode.PACKAGE_EXHAUSTED
