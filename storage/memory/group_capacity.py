"""M2 for the in-memory organisation store: the group-expansion package's ledger and the
expansions it paid for, kept in each organisation's state (``_Org.group_ledger``,
``_Org.group_expansions``) and mixed into ``MemoryOrganisationStore``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.errors import IdempotencyConflict
from storage.group_capacity import GroupExpansion, GroupPackage, PackageExhausted
from storage.records import IdempotencyKey

if TYPE_CHECKING:
    from storage.memory.orgs import _Org


def _package(state: _Org) -> GroupPackage:
    granted = used = 0
    by_member: dict[int, int] = {}
    for (sender, _client_id), (_fingerprint, kind, units) in state.group_ledger.items():
        if kind == "topup":
            granted += units
        else:
            used += units
            if units:
                by_member[sender] = by_member.get(sender, 0) + units
    return GroupPackage(
        org_id=state.org.org_id,
        granted=granted,
        used=used,
        by_member=dict(sorted(by_member.items())),
    )


def _seen(state: _Org, key: IdempotencyKey) -> bool:
    recorded = state.group_ledger.get((key.sender, key.client_id))
    if recorded is None:
        return False
    if recorded[0] != key.fingerprint:
        raise IdempotencyConflict("idempotency key reused for a different request")
    return True


class MemoryGroupCapacity:
    _orgs: dict[int, _Org]

    def _org(self, org_id: int) -> _Org:
        """The organisation's state (also what ``MemoryOrganisationStore`` uses)."""
        state = self._orgs.get(org_id)
        if state is None:
            raise KeyError(f"no organisation {org_id}")
        return state

    async def top_up_group_package(
        self, org_id: int, *, units: int, key: IdempotencyKey, now: int
    ) -> tuple[GroupPackage, bool]:
        state = self._org(org_id)
        if _seen(state, key):
            return _package(state), True
        state.group_ledger[(key.sender, key.client_id)] = (key.fingerprint, "topup", units)
        return _package(state), False

    async def group_package(self, org_id: int) -> GroupPackage:
        state = self._orgs.get(org_id)
        return GroupPackage(org_id=org_id) if state is None else _package(state)

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
        state = self._org(org_id)
        slot = (conv_id, member_limit)
        if _seen(state, key):
            return state.group_expansions[slot], True
        if _package(state).remaining < price:
            raise PackageExhausted(f"the package has fewer than {price} units left")
        state.group_ledger[(key.sender, key.client_id)] = (key.fingerprint, "expand", price)
        existing = state.group_expansions.get(slot)
        start = now if existing is None else max(now, existing.expires_at)
        expansion = GroupExpansion(
            org_id=org_id,
            conv_id=conv_id,
            member_limit=member_limit,
            expires_at=start + period_ms,
            paid_by=key.sender,
            updated_at=now,
        )
        state.group_expansions[slot] = expansion
        return expansion, False

    async def group_expansions(self, conv_id: str) -> list[GroupExpansion]:
        found = [
            expansion
            for state in self._orgs.values()
            if state.org.dissolving_at is None
            for (conv, _limit), expansion in state.group_expansions.items()
            if conv == conv_id
        ]
        return sorted(found, key=lambda e: (e.member_limit, e.org_id))
