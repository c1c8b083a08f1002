"""Real-person verification of enterprise accounts (O3).

A ``Verifier`` answers whether the person behind an enterprise account passed real-person
verification. The default is the platform operator: the operator checks the person out of
band and runs ``rivet org verify-person --data-dir D --org O --account NAME`` (``--undo``
removes it), which sets the account's flag in the organisation store. An admin's
``org.account.verify_person`` with ``verified: true`` asks the verifier; the default one
answers no, so only the operator command verifies. Removing verification never asks the
verifier: the account itself or an admin may always do it.
"""

from __future__ import annotations

from typing import Protocol

from storage.enterprise import EnterpriseAccount


class Verifier(Protocol):
    async def verify(self, account: EnterpriseAccount) -> bool:
        """True if the person behind ``account`` passed real-person verification now."""
        ...


class OperatorVerifier:
    """The default: verification is the operator's command, never an API request."""

    async def verify(self, account: EnterpriseAccount) -> bool:
        return False
