"""G1 with P5: the one rule for where a DING's SMS or call goes (``dialable_phone``)."""

from __future__ import annotations

import pytest

from server.ding.relay import dialable_phone
from storage.enterprise import AccountStatus, EnterpriseAccount
from storage.records import User


def user(phone: str) -> User:
    return User(user_id=7, phone=phone, display_name="x", created_at=0)


def account(phone: str | None, status: AccountStatus = "active") -> EnterpriseAccount:
    return EnterpriseAccount(
        org_id=1, account="qa", user_id=7, password_hash="h", status=status, phone=phone
    )


def test_g1_a_personal_user_is_reached_at_their_registered_phone() -> None:
    assert dialable_phone(user("+4930123"), None) == "+4930123"


def test_g1_a1_an_erased_account_has_no_number() -> None:
    assert dialable_phone(user("deleted:7"), None) is None


def test_g1_p5_an_enterprise_account_is_reached_at_its_contact_phone_only() -> None:
    placeholder = user("ent:1:qa")
    assert dialable_phone(placeholder, account("+4930999")) == "+4930999"
    assert dialable_phone(placeholder, account(None)) is None


@pytest.mark.parametrize("status", ["disabled", "banned", "cancelled"])
def test_g1_p5_an_account_its_organisation_switched_off_is_out_of_reach(
    status: AccountStatus,
) -> None:
    assert dialable_phone(user("ent:1:qa"), account("+4930999", status)) is None
