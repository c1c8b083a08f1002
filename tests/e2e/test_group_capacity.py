"""M2 group capacity over a real WebSocket, on memory and SQLite, with a manual clock: an
admin tops up the organisation's group-expansion package (idempotent), the group's owner
expands the group to a tier, it admits up to that tier, and once the expansion lapses it
keeps every member but admits nobody new; an exhausted package is a clear error."""

from __future__ import annotations

from client import ClientState, RivetClient
from protocol import group_capacity as pg
from protocol import orgs as po
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from tests.e2e.rig import Rig, refused, rig_fixture, uid

DAY = 86_400

rig = rig_fixture(
    "+1777",
    group_member_tiers=(2, 4),
    group_tier_prices=(3,),
    group_expansion_days=30,
)


async def _join(rig: Rig, org: int, admin: ClientState, user: ClientState) -> None:
    async with RivetClient.connect(rig.url, admin) as a:
        invited: po.JoinRequestResult = await a.request(
            po.OrgInvite(rid=0, org=org, user=uid(user))
        )
    async with RivetClient.connect(rig.url, user) as u:
        await u.request(
            po.OrgAnswer(rid=0, org=org, request_id=invited.request.request_id, accept=True)
        )


async def test_m2_e2e_expansion_admits_to_the_tier_and_a_lapse_keeps_members(rig: Rig) -> None:
    _, admin = await rig.new_user("admin")
    _, owner = await rig.new_user("owner")
    _, bob = await rig.new_user("bob")
    _, carol = await rig.new_user("carol")
    _, dave = await rig.new_user("dave")
    _, eve = await rig.new_user("eve")
    async with RivetClient.connect(rig.url, admin) as a:
        created_org: po.OrgResult = await a.request(po.OrgCreate(rid=0, name="Acme"))
    org = created_org.org.org
    await _join(rig, org, admin, owner)

    async with (
        RivetClient.connect(rig.url, owner) as o,
        RivetClient.connect(rig.url, admin) as a,
        RivetClient.connect(rig.url, dave) as d,
    ):
        assert o.session is not None and o.session.limits.group_member_limit == 2
        group: replies.GroupCreated = await o.request(
            rq.GroupCreate(rid=0, cmid="g", title="Crew", members=[uid(bob)])
        )
        conv = group.conv.conv
        add_carol = rq.GroupAdd(rid=0, conv=conv, users=[uid(carol)])
        assert await refused(o, add_carol) == ErrorCode.MEMBER_LIMIT  # the base limit, 2

        expand = pg.GroupExpand(rid=0, conv=conv, org=org, tier=4, cmid="x1")
        assert await refused(o, expand) == ErrorCode.PACKAGE_EXHAUSTED  # nothing bought yet
        topup = pg.OrgGroupTopup(rid=0, org=org, units=3, cmid="po-1")
        first: pg.GroupTopupResult = await a.request(topup)
        resent: pg.GroupTopupResult = await a.request(topup)
        assert (first.duplicate, resent.duplicate, resent.package.granted) == (False, True, 3)

        expanded: pg.GroupExpanded = await o.request(expand)
        expires = rig.clock.now_ms() + 30 * DAY * 1000
        assert (expanded.conv.member_limit, expanded.expires_at, expanded.paid) == (4, expires, 3)
        assert await refused(o, pg.GroupExpand(rid=0, conv=conv, org=org, tier=3, cmid="x2")) == (
            ErrorCode.NOT_A_TIER
        )

        await o.request(rq.GroupAdd(rid=0, conv=conv, users=[uid(carol), uid(dave)]))
        add_eve = rq.GroupAdd(rid=0, conv=conv, users=[uid(eve)])
        assert await refused(o, add_eve) == ErrorCode.MEMBER_LIMIT  # 4 of 4
        shown: replies.Conversation = await o.request(rq.GroupInfo(rid=0, conv=conv))
        assert (shown.conv.member_count, shown.conv.member_limit) == (4, 4)
        assert shown.conv.expansion_expires_at == expires

        rig.clock.advance(30 * DAY)  # the expansion lapses
        shown = await o.request(rq.GroupInfo(rid=0, conv=conv))
        assert (shown.conv.member_count, shown.conv.member_limit) == (4, 2)
        assert shown.conv.expansion_expires_at is None
        assert await refused(o, add_eve) == ErrorCode.MEMBER_LIMIT
        page: replies.Members = await o.request(rq.GroupMembers(rid=0, conv=conv))
        assert sorted(m.user_id for m in page.members) == sorted(
            uid(u) for u in (owner, bob, carol, dave)
        )
        renew = pg.GroupExpand(rid=0, conv=conv, org=org, tier=4, cmid="x3")
        assert await refused(o, renew) == ErrorCode.PACKAGE_EXHAUSTED  # 3 - 3 = 0 left

        package: pg.GroupPackage = await a.request(pg.OrgGroupPackage(rid=0, org=org))
        assert (package.granted, package.used, package.remaining) == (3, 3, 0)
        assert [(m.user, m.used) for m in package.members] == [(uid(owner), 3)]
        await d.send(conv, "still here")  # a member beyond the base limit still talks
