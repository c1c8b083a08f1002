"""Group capacity (M2): expansions of a group's member limit paid from an organisation's
package, and the package itself.

* ``group.expand``: the group's owner who is a member of the organisation, or an admin of it
  with ``members`` who is in the group, raises the group to one of the configured tiers for
  one period (``group_expansion_days``), spending the tier's price from the organisation's
  package in the same transaction that records the expansion (an exhausted package changes
  nothing: ``package_exhausted``). Buying the same tier again extends it by a period.
* ``org.group_topup`` / ``org.group_package``: admins with ``members`` buy units (idempotent
  by ``cmid``, audit-logged as the organisation's act, P3) and read what is left and each
  member's spend (the G2 shape of the DING package).
* ``effective_limit`` / ``conversation_info``: what the group service asks before admitting
  members and when it shows a group: the largest tier of an expansion that has not lapsed
  by the injected clock, else the base limit. The decision itself is
  ``policy.effective_member_limit`` and ``policy.may_admit``.

Expansions live in the paying organisation's store (D2): they are its purchases.
"""

from __future__ import annotations

import msgspec

from protocol import group_capacity as pg
from protocol import replies
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import conversation_kind
from server import policy
from server.connection import Connection
from server.context import Context
from server.services.render import conversation_info as base_conversation_info
from server.services.render import fingerprint
from storage.group_capacity import GroupPackage, PackageExhausted
from storage.orgs import OrgMember
from storage.records import Conversation, IdempotencyKey

_DAY_MS = 86_400_000


async def capacity(ctx: Context, conversation: Conversation) -> tuple[int, int | None]:
    """M2: the group's member limit now, and when the expansion giving it lapses."""
    if conversation.kind != "group":
        return conversation.member_limit, None
    expansions = await ctx.stores.orgs.group_expansions(conversation.conv_id)
    return policy.effective_member_limit(
        conversation.member_limit, expansions, now=ctx.clock.now_ms()
    )


async def effective_limit(ctx: Context, conversation: Conversation) -> int:
    """M2: the limit ``policy.may_admit`` judges an add against."""
    limit, _expires_at = await capacity(ctx, conversation)
    return limit


async def conversation_info(ctx: Context, conversation: Conversation) -> replies.ConversationInfo:
    """The group as members see it: its effective member limit and when that lapses."""
    limit, expires_at = await capacity(ctx, conversation)
    return msgspec.structs.replace(
        base_conversation_info(conversation),
        member_limit=limit,
        expansion_expires_at=expires_at,
    )


async def expand(ctx: Context, conn: Connection, req: pg.GroupExpand) -> pg.GroupExpanded:
    caller = _user(conn)
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    store = ctx.conversations(req.conv)
    conversation = await store.get_conversation(req.conv)
    group_member = await store.get_member(req.conv, caller)
    payer = policy.may_expand_group(
        caller,
        conversation=conversation,
        group_member=group_member,
        org_member=await _org_member(ctx, req.org, caller),
    )
    assert conversation is not None
    price = policy.expansion_price(ctx.config.group_expansion_tiers, req.tier)
    key = IdempotencyKey(
        sender=caller,
        client_id="gx:" + req.cmid,
        fingerprint=fingerprint("group.expand", req.conv, str(req.tier)),
    )
    try:
        expansion, duplicate = await ctx.stores.orgs.expand_group(
            req.org,
            conv_id=req.conv,
            member_limit=req.tier,
            price=price,
            period_ms=int(ctx.config.group_expansion_days * _DAY_MS),
            key=key,
            now=ctx.clock.now_ms(),
        )
    except PackageExhausted:
        raise ProtocolError(
            ErrorCode.PACKAGE_EXHAUSTED,
            f"the organisation's group-expansion package has fewer than {price} units left",
        ) from None
    if not duplicate and conversation.owner_id != caller:
        # An admin spending the package on someone else's group acts for the organisation.
        await _admin_act(ctx, payer, "group_expand", f"tier:{req.tier}")
    return pg.GroupExpanded(
        conv=await conversation_info(ctx, conversation),
        org=req.org,
        tier=expansion.member_limit,
        expires_at=expansion.expires_at,
        paid=0 if duplicate else price,
        duplicate=duplicate,
    )


async def topup(ctx: Context, conn: Connection, req: pg.OrgGroupTopup) -> pg.GroupTopupResult:
    caller = _user(conn)
    admin = policy.may_manage_group_package(await _org_member(ctx, req.org, caller))
    key = IdempotencyKey(
        sender=caller,
        client_id="gt:" + req.cmid,
        fingerprint=fingerprint("org.group_topup", str(req.units)),
    )
    package, duplicate = await ctx.stores.orgs.top_up_group_package(
        req.org, units=req.units, key=key, now=ctx.clock.now_ms()
    )
    if not duplicate:
        await _admin_act(ctx, admin, "group_topup", f"group:{req.units}")
    return pg.GroupTopupResult(package=_package_info(ctx, package), duplicate=duplicate)


async def package(ctx: Context, conn: Connection, req: pg.OrgGroupPackage) -> pg.GroupPackage:
    policy.may_manage_group_package(await _org_member(ctx, req.org, _user(conn)))
    return _package_info(ctx, await ctx.stores.orgs.group_package(req.org))


# --- helpers -----------------------------------------------------------------------------------


def _package_info(ctx: Context, package: GroupPackage) -> pg.GroupPackage:
    return pg.GroupPackage(
        org=package.org_id,
        granted=package.granted,
        used=package.used,
        remaining=package.remaining,
        members=[pg.GroupPackageUse(user=u, used=n) for u, n in sorted(package.by_member.items())],
        tiers=[
            pg.GroupTierPrice(member_limit=tier, price=price)
            for tier, price in sorted(ctx.config.group_expansion_tiers.items())
        ],
        period_days=ctx.config.group_expansion_days,
    )


async def _org_member(ctx: Context, org_id: int, user_id: int) -> OrgMember | None:
    """The caller's membership, or None when the organisation is missing or dissolving (O4:
    gone for every path)."""
    org = await ctx.stores.orgs.get_org(org_id)
    if org is None or org.dissolving_at is not None:
        return None
    return await ctx.stores.orgs.get_member(org_id, user_id)


async def _admin_act(ctx: Context, admin: OrgMember, action: str, target: str) -> None:
    """P3: an admin's act is the organisation's and is logged (through the D5 gate)."""
    view = policy.admin_view(
        admin, "members", store=ctx.stores.orgs, clock=ctx.clock, feeds=ctx.org_feeds
    )
    await view.record(action, target)


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id
