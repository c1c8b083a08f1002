"""Which organisations each user belongs to, cached for the send path.

A message's copy effect names the organisations its sender belonged to when sending; the
outbox relay then applies the consent rule to each (D4). The cache is dropped for a user
whenever this process changes their memberships.
"""

from __future__ import annotations

from collections import OrderedDict

from storage.orgs import OrganisationStore


class OrgIndex:
    def __init__(self, store: OrganisationStore, *, max_users: int = 100_000) -> None:
        self._store = store
        self._orgs: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._max = max_users
        self._generation = 0

    async def orgs_of(self, user_id: int) -> tuple[int, ...]:
        cached = self._orgs.get(user_id)
        if cached is not None:
            self._orgs.move_to_end(user_id)
            return cached
        generation = self._generation
        orgs = tuple(m.org_id for m in await self._store.orgs_of(user_id))
        if generation == self._generation:
            self._orgs[user_id] = orgs
            if len(self._orgs) > self._max:
                self._orgs.popitem(last=False)
        return orgs

    def invalidate(self, user_id: int) -> None:
        self._generation += 1
        self._orgs.pop(user_id, None)
