"""M2 group capacity in the organisation domain (D2): the organisation's group-expansion
package and the expansions it paid for.

The package is a ledger in the organisation's own store: top-ups (``org.group_topup``) add
units, each expansion (``group.expand``) spends the tier's price, recorded against the
member who asked. An expansion raises one group to one tier until ``expires_at``; buying the
same tier again before or after it lapsed extends it by one period. The spend and the
expansion are one transaction, so an exhausted package changes nothing (G2/M2: never a
silent effect). Both writes are idempotent by the caller's key, like every client write.

Implemented by the organisation store (``OrganisationStore`` includes this protocol); every
row is keyed by ``org_id`` first and deleted with the organisation (O4).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from storage.errors import StoreError
from storage.records import IdempotencyKey


class PackageExhausted(StoreError):
    """The package has fewer units left than the expansion costs; nothing was written."""


class GroupPackage(msgspec.Struct, frozen=True, kw_only=True):
    """An organisation's group-expansion package: units bought, units spent, and each
    member's spend."""

    org_id: int
    granted: int = 0
    used: int = 0
    by_member: dict[int, int] = msgspec.field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return max(self.granted - self.used, 0)


class GroupExpansion(msgspec.Struct, frozen=True, kw_only=True):
    """One organisation's paid expansion of one group to one tier (``member_limit``)."""

    org_id: int
    conv_id: str
    member_limit: int
    expires_at: int
    #: Who paid last (bought or renewed it).
    paid_by: int
    updated_at: int

    def active(self, now: int) -> bool:
        return self.expires_at > now


class GroupCapacityStore(Protocol):
    async def top_up_group_package(
        self, org_id: int, *, units: int, key: IdempotencyKey, now: int
    ) -> tuple[GroupPackage, bool]:
        """Add ``units`` (bought by ``key.sender``) in one transaction with the key. A key
        used before returns (the package now, True) and writes nothing;
        ``IdempotencyConflict`` if its fingerprint differs. ``KeyError`` if there is no such
        organisation."""

    async def group_package(self, org_id: int) -> GroupPackage:
        """The package (all zero if nothing was ever bought)."""

    async def expand_group(
        self,
        org_id: int,
        *,
        conv_id: str,
        member_limit: int,
        price: int,
        period_ms: int,
        key: IdempotencyKey,
        now: int,
    ) -> tuple[GroupExpansion, bool]:
        """In one transaction: spend ``price`` units of the package (recorded against
        ``key.sender``) and extend the organisation's expansion of ``conv_id`` to
        ``member_limit`` to ``max(now, its expires_at) + period_ms`` (a new one expires at
        ``now + period_ms``). ``PackageExhausted`` if fewer than ``price`` units are left,
        writing nothing. A key used before returns (that expansion now, True) and writes
        nothing; ``IdempotencyConflict`` if its fingerprint differs. ``KeyError`` if there is
        no such organisation."""

    async def group_expansions(self, conv_id: str) -> list[GroupExpansion]:
        """Every expansion of ``conv_id`` by organisations that are not dissolving, lapsed
        ones included, ascending by (member_limit, org_id)."""
