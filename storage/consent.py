"""D1: consent records. A user grants or revokes consent per organisation, alone (D4
decisions). The records live in the personal domain, with their times, and are never
visible to an organisation; the router reads them to decide what to copy.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class ConsentChange(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    org_id: int
    granted: bool
    at: int


class ConsentStore(Protocol):
    async def set_consent(
        self, *, user_id: int, org_id: int, granted: bool, now: int
    ) -> ConsentChange:
        """Record a grant or a revocation at ``now``. A change that does not change the state
        is still recorded (it is the user's act) but does not alter the history's meaning."""

    async def consent_history(self, user_id: int, org_id: int) -> list[ConsentChange]:
        """Every change for (user, organisation), oldest first."""

    async def consents_of(self, user_id: int) -> dict[int, bool]:
        """The user's current state per organisation they ever answered for."""

    async def erase_user(self, user_id: int) -> None:
        """A1: forget every consent record of a deleted account."""


def consented_at(history: list[ConsentChange], at: int) -> bool:
    """Whether the last change at or before ``at`` was a grant. A change at the same
    millisecond as the message counts as earlier only if it is a revocation: on a tie the
    message is not copied (the conservative reading of commit order)."""
    state = False
    for change in history:
        if change.at < at or (change.at == at and not change.granted):
            state = change.granted
        elif change.at > at:
            break
    return state
