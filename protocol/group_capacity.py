"""Group capacity (M2): member-limit tiers and expansions paid from an organisation's package.

A group starts with the server's base member limit. An admin of an organisation with the
``members`` permission buys units for the organisation's group-expansion package
(``org.group_topup``); the owner of a group who is a member of the organisation (or an admin
of it with ``members`` who is in the group) spends them to raise the group to one of the
server's tiers for one expansion period (``group.expand``). A group whose expansion lapsed
keeps every member but admits nobody beyond its base limit. Joined to the protocol's unions
in ``protocol.catalog``.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from protocol import limits
from protocol.replies import ConversationInfo, Result
from protocol.requests import Request
from protocol.types import ClientMessageId, ConversationId, OrgId, Timestamp, UserId

#: A member limit a group may be expanded to: one of the server's tiers, at most 10,000.
GroupTier = Annotated[int, Meta(ge=2, le=limits.MAX_GROUP_MEMBER_LIMIT)]
#: Units one top-up may add to an organisation's group-expansion package.
GroupTopupUnits = Annotated[int, Meta(ge=1, le=limits.MAX_GROUP_TOPUP_UNITS)]


class GroupExpand(Request, tag="group.expand", frozen=True):
    """M2: raise ``conv`` to ``tier`` members for one expansion period, paid from
    organisation ``org``'s package; again on the same tier extends the period."""

    conv: ConversationId
    org: OrgId
    tier: GroupTier
    cmid: ClientMessageId


class OrgGroupTopup(Request, tag="org.group_topup", frozen=True):
    """M2: an admin with ``members`` adds ``units`` to the organisation's group-expansion
    package."""

    org: OrgId
    units: GroupTopupUnits
    cmid: ClientMessageId


class OrgGroupPackage(Request, tag="org.group_package", frozen=True):
    """M2: the organisation's group-expansion package: what is left, and who spent it."""

    org: OrgId


GroupCapacityRequest = GroupExpand | OrgGroupTopup | OrgGroupPackage


# --- results ----------------------------------------------------------------------------------


class GroupExpanded(Result, frozen=True):
    """The group as it is after the expansion (its effective ``member_limit`` and
    ``expansion_expires_at``), and the expansion bought or renewed."""

    conv: ConversationInfo
    org: OrgId
    tier: int
    expires_at: Timestamp
    paid: int
    duplicate: bool


class GroupPackageUse(Result, frozen=True):
    """Units of the package one member's expansions spent."""

    user: UserId
    used: int


class GroupTierPrice(Result, frozen=True):
    """One tier a group can be expanded to, and what one period of it costs."""

    member_limit: int
    price: int


class GroupPackage(Result, frozen=True):
    org: OrgId
    granted: int
    used: int
    remaining: int
    members: list[GroupPackageUse]
    tiers: list[GroupTierPrice]
    period_days: float


class GroupTopupResult(Result, frozen=True):
    package: GroupPackage
    duplicate: bool


GROUP_CAPACITY_RESULT_TYPES: dict[type[Request], type[Result]] = {
    GroupExpand: GroupExpanded,
    OrgGroupTopup: GroupTopupResult,
    OrgGroupPackage: GroupPackage,
}
