"""The in-memory consent store (reference implementation of ``storage.consent``)."""

from __future__ import annotations

from storage.consent import ConsentChange


class MemoryConsentStore:
    def __init__(self) -> None:
        self._history: dict[tuple[int, int], list[ConsentChange]] = {}

    async def set_consent(
        self, *, user_id: int, org_id: int, granted: bool, now: int
    ) -> ConsentChange:
        change = ConsentChange(user_id=user_id, org_id=org_id, granted=granted, at=now)
        self._history.setdefault((user_id, org_id), []).append(change)
        return change

    async def consent_history(self, user_id: int, org_id: int) -> list[ConsentChange]:
        return list(self._history.get((user_id, org_id), []))

    async def consents_of(self, user_id: int) -> dict[int, bool]:
        return {
            org_id: changes[-1].granted
            for (user, org_id), changes in sorted(self._history.items())
            if user == user_id and changes
        }

    async def erase_user(self, user_id: int) -> None:
        for key in [k for k in self._history if k[0] == user_id]:
            del self._history[key]
