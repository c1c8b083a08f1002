"""Enterprise accounts at run time: a small cache of who is one, and the verifier (O3).

The send path asks, for the sender and the peer of every message, whether they are
enterprise accounts (P5) and with which verification and controls (O1, O3). The answer is
cached per user and dropped whenever this process changes the account. Another process
(the operator's ``rivet org verify-person``) changes the store directly, so an entry also
expires after ``ttl_seconds``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from server.verifier import OperatorVerifier, Verifier
from storage.enterprise import EnterpriseAccount
from storage.orgs import OrganisationStore


class EnterpriseIndex:
    def __init__(
        self,
        store: OrganisationStore,
        *,
        verifier: Verifier | None = None,
        ttl_seconds: float = 10.0,
        max_users: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        #: O3: who may say that a person passed real-person verification.
        self.verifier: Verifier = verifier or OperatorVerifier()
        self._ttl = ttl_seconds
        self._max = max_users
        self._now = monotonic
        self._cache: OrderedDict[int, tuple[float, EnterpriseAccount | None]] = OrderedDict()
        self._generation = 0

    async def account_of(self, user_id: int) -> EnterpriseAccount | None:
        cached = self._cache.get(user_id)
        now = self._now()
        if cached is not None and now - cached[0] < self._ttl:
            self._cache.move_to_end(user_id)
            return cached[1]
        generation = self._generation
        account = await self._store.account_of_user(user_id)
        if generation == self._generation:
            self._cache[user_id] = (now, account)
            self._cache.move_to_end(user_id)
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return account

    async def accounts_of(self, user_ids: list[int]) -> dict[int, EnterpriseAccount | None]:
        return {user_id: await self.account_of(user_id) for user_id in user_ids}

    def invalidate(self, user_id: int) -> None:
        self._generation += 1
        self._cache.pop(user_id, None)
