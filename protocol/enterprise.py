"""Enterprise accounts (P5), real-person verification (O3) and information-security
controls (O1).

A *verified* organisation creates enterprise accounts for its members: separate identities
with their own user ids, which log in with organisation + account name + password
(``login.enterprise``) and then use every chat op like anyone else. Admins with the
``members`` permission disable, ban and cancel them, set their controls and their contact
phone number (where their DING SMS and calls go, G1), read their login records and remove
their real-person verification; every such act is in the audit log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from protocol import limits
from protocol.replies import Result, Tokens
from protocol.requests import Request
from protocol.types import Name, OrgId, PageLimit, Phone, Timestamp, UserId

AccountName = Annotated[str, Meta(min_length=1, max_length=64)]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
AccountStatusName = Literal["active", "disabled", "banned", "cancelled"]
ControlName = Literal[
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


class OrgAccountCreate(Request, tag="org.account.create", frozen=True):
    """P5: an admin with ``members`` of a *verified* organisation creates an account."""

    org: OrgId
    account: AccountName
    password: Password
    display_name: Name | None = None
    #: G1: the contact number its DING SMS and calls go to (E.164); none when null.
    phone: Phone | None = None


class LoginEnterprise(Request, tag="login.enterprise", frozen=True):
    """Log in as an enterprise account: registers a new device and authenticates."""

    org: OrgId
    account: AccountName
    password: Password
    device_name: Name = "device"


class OrgAccountStatus(Request, tag="org.account.status", frozen=True):
    """P5: enable, disable, ban or cancel (final) an account."""

    org: OrgId
    user: UserId
    status: AccountStatusName


class OrgAccountLogins(Request, tag="org.account.logins", frozen=True):
    """P5: the account's latest login records, newest first."""

    org: OrgId
    user: UserId
    limit: PageLimit = limits.DEFAULT_PAGE


class OrgAccountVerifyPerson(Request, tag="org.account.verify_person", frozen=True):
    """O3: remove the account's real-person verification, or ask the verifier for it."""

    org: OrgId
    user: UserId
    verified: bool


class EnterpriseUnverifySelf(Request, tag="enterprise.unverify_self", frozen=True):
    """O3: the enterprise account itself removes its real-person verification."""


class OrgAccountControls(Request, tag="org.account.controls", frozen=True):
    """O1: replace the account's information-security controls."""

    org: OrgId
    user: UserId
    controls: Annotated[list[ControlName], Meta(max_length=16)]


class OrgAccountPhone(Request, tag="org.account.phone", frozen=True):
    """G1 with P5: set the account's contact phone number (E.164), where its DING SMS and
    calls go, or clear it with null. The organisation's data (D2): never a login
    identifier, never shown to other users."""

    org: OrgId
    user: UserId
    phone: Phone | None


# --- results -------------------------------------------------------------------------------------


class AccountInfo(Result, frozen=True):
    org: OrgId
    account: str
    user: UserId
    status: AccountStatusName
    person_verified: bool
    controls: list[str]
    created_at: Timestamp
    #: G1: the contact phone number its admins set, or null.
    phone: str | None


class AccountResult(Result, frozen=True):
    account: AccountInfo


class LoginRecordInfo(Result, frozen=True):
    ts: Timestamp
    ok: bool
    reason: str


class LoginRecords(Result, frozen=True):
    org: OrgId
    user: UserId
    records: list[LoginRecordInfo]


EnterpriseRequest = (
    OrgAccountCreate
    | LoginEnterprise
    | OrgAccountStatus
    | OrgAccountLogins
    | OrgAccountVerifyPerson
    | EnterpriseUnverifySelf
    | OrgAccountControls
    | OrgAccountPhone
)

ENTERPRISE_RESULT_TYPES: dict[type[Request], type[Result]] = {
    OrgAccountCreate: AccountResult,
    LoginEnterprise: Tokens,
    OrgAccountStatus: AccountResult,
    OrgAccountLogins: LoginRecords,
    OrgAccountVerifyPerson: AccountResult,
    EnterpriseUnverifySelf: AccountResult,
    OrgAccountControls: AccountResult,
    OrgAccountPhone: AccountResult,
}
