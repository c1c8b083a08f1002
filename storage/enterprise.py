"""Enterprise accounts (P5, O1, O3): records kept in the organisation store (D2).

An enterprise account is two rows. In the personal store it is an ordinary user, so every
chat path works unchanged; its phone is the placeholder ``ent:<org>:<account>``, which no
phone number can equal (phones are ``+`` and digits), so nobody can log in to it, or find
it, by phone. In the organisation store it is an ``EnterpriseAccount``: the organisation
that owns it, the account name (unique within the organisation), the Argon2id hash of its
password (A2), its status, whether the person behind it passed real-person verification
(O3), the information-security controls an admin set on it (O1), and the contact phone
number its admins set for DING SMS and call escalation (G1; the organisation's data, D2:
never a login identifier, never shown to other users; ``None`` when there is none). Every
login attempt on an existing account is kept as a ``LoginRecord`` for the organisation's
admins.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

AccountStatus = Literal["active", "disabled", "banned", "cancelled"]
ACCOUNT_STATUSES: Final = ("active", "disabled", "banned", "cancelled")

#: O1: the controls an admin can set on an enterprise account.
Control = Literal[
    "no_messages",
    "no_files",
    "no_contacts",
    "no_join_orgs",
    "no_login",
    "frozen",
    "no_ding",
    "no_live",
    "no_external_chat",
]
CONTROLS: Final[frozenset[str]] = frozenset(
    {
        "no_messages",
        "no_files",
        "no_contacts",
        "no_join_orgs",
        "no_login",
        "frozen",
        "no_ding",
        "no_live",
        "no_external_chat",
    }
)


def placeholder_phone(org_id: int, account: str) -> str:
    """The personal user row's unique ``phone`` for an enterprise account."""
    return f"ent:{org_id}:{account}"


class EnterpriseAccount(msgspec.Struct, frozen=True, kw_only=True):
    org_id: int
    account: str
    user_id: int
    password_hash: str
    status: AccountStatus = "active"
    person_verified: bool = False
    controls: frozenset[str] = frozenset()
    created_at: int = 0
    #: G1/P5: where the account's DING SMS and calls go (E.164), set by its admins.
    phone: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


class LoginRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One login attempt: ``reason`` is ``""`` when it succeeded, else why it was refused
    (``wrong_password``, ``disabled``, ``banned``, ``cancelled``, ``no_login``,
    ``frozen``, ``suspended``)."""

    org_id: int
    user_id: int
    ts: int
    ok: bool
    reason: str = ""
