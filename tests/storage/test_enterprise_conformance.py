"""Conformance: enterprise accounts and their login records (P5, O1, O3), every backend."""

from __future__ import annotations

import msgspec
import pytest

from storage.errors import AlreadyExists
from storage.stores import Stores

NOW = 1_000_000


async def test_p5_accounts_are_unique_per_org_and_per_user(stores: Stores) -> None:
    acme = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    other = await stores.orgs.create_org(name="Other", disclosure="", creator=2, now=NOW)
    created = await stores.orgs.create_account(
        acme.org_id, account="bob", user_id=10, password_hash="$argon2id$x", now=NOW
    )
    assert (created.status, created.person_verified, created.controls) == (
        "active",
        False,
        frozenset(),
    )
    assert await stores.orgs.get_account(acme.org_id, "bob") == created
    assert await stores.orgs.account_of_user(10) == created
    assert await stores.orgs.account_of_user(11) is None
    assert await stores.orgs.get_account(acme.org_id, "carol") is None
    assert await stores.orgs.get_account(other.org_id, "bob") is None
    with pytest.raises(AlreadyExists):
        await stores.orgs.create_account(
            acme.org_id, account="bob", user_id=11, password_hash="h", now=NOW
        )
    with pytest.raises(AlreadyExists):
        await stores.orgs.create_account(
            other.org_id, account="robert", user_id=10, password_hash="h", now=NOW
        )
    # The same name in another organisation is another account.
    theirs = await stores.orgs.create_account(
        other.org_id, account="bob", user_id=12, password_hash="h", now=NOW
    )
    assert (await stores.orgs.account_of_user(12)) == theirs
    with pytest.raises(KeyError):
        await stores.orgs.create_account(99, account="x", user_id=13, password_hash="h", now=NOW)


async def test_o1_o3_status_verification_and_controls(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    await stores.orgs.create_account(
        org.org_id, account="bob", user_id=10, password_hash="h", now=NOW
    )
    disabled = await stores.orgs.set_account_status(org.org_id, 10, status="disabled")
    assert disabled.status == "disabled" and not disabled.active
    verified = await stores.orgs.set_person_verified(org.org_id, 10, verified=True)
    assert verified.person_verified and verified.status == "disabled"
    controlled = await stores.orgs.set_controls(
        org.org_id, 10, controls=frozenset({"frozen", "no_ding"})
    )
    assert controlled.controls == frozenset({"frozen", "no_ding"})
    assert await stores.orgs.account_of_user(10) == controlled
    assert await stores.orgs.get_account(org.org_id, "bob") == controlled
    cleared = await stores.orgs.set_controls(org.org_id, 10, controls=frozenset())
    assert cleared.controls == frozenset() and cleared.person_verified
    with pytest.raises(KeyError):
        await stores.orgs.set_account_status(org.org_id, 11, status="banned")
    other = await stores.orgs.create_org(name="Other", disclosure="", creator=2, now=NOW)
    with pytest.raises(KeyError):  # an organisation reaches only its own accounts
        await stores.orgs.set_person_verified(other.org_id, 10, verified=False)
    with pytest.raises(KeyError):
        await stores.orgs.set_controls(other.org_id, 10, controls=frozenset({"frozen"}))


async def test_g1_p5_the_contact_phone_is_set_changed_and_cleared(stores: Stores) -> None:
    """G1 with P5: the account's contact phone for DING SMS and calls, the organisation's
    data (D2). Optional at creation, not unique, reachable only through its organisation."""
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    bob = await stores.orgs.create_account(
        org.org_id, account="bob", user_id=10, password_hash="h", now=NOW, phone="+15550001"
    )
    assert bob.phone == "+15550001"
    assert (await stores.orgs.account_of_user(10)) == bob
    carol = await stores.orgs.create_account(
        org.org_id, account="carol", user_id=11, password_hash="h", now=NOW
    )
    assert carol.phone is None and (await stores.orgs.get_account(org.org_id, "carol")) == carol
    # Several accounts may share one number (a team's on-call phone).
    shared = await stores.orgs.set_account_phone(org.org_id, 11, phone="+15550001")
    assert shared.phone == "+15550001" and shared.account == "carol"
    changed = await stores.orgs.set_account_phone(org.org_id, 10, phone="+4930123")
    assert changed == msgspec.structs.replace(bob, phone="+4930123")
    assert (await stores.orgs.get_account(org.org_id, "bob")) == changed
    assert changed.phone == "+4930123" and changed.status == "active"
    cleared = await stores.orgs.set_account_phone(org.org_id, 10, phone=None)
    assert cleared.phone is None and (await stores.orgs.account_of_user(10)) == cleared
    # Other changes keep it.
    await stores.orgs.set_account_phone(org.org_id, 10, phone="+4930124")
    assert (await stores.orgs.set_controls(org.org_id, 10, controls=frozenset())).phone == (
        "+4930124"
    )
    assert (await stores.orgs.set_account_status(org.org_id, 10, status="disabled")).phone == (
        "+4930124"
    )
    (listed, _carol) = await stores.orgs.list_accounts(org.org_id, limit=5)
    assert listed.phone == "+4930124"
    other = await stores.orgs.create_org(name="Other", disclosure="", creator=2, now=NOW)
    with pytest.raises(KeyError):  # an organisation reaches only its own accounts
        await stores.orgs.set_account_phone(other.org_id, 10, phone="+15550009")
    with pytest.raises(KeyError):
        await stores.orgs.set_account_phone(org.org_id, 99, phone=None)


async def test_p5_login_records_newest_first_per_account(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    for user_id, name in ((10, "bob"), (11, "carol")):
        await stores.orgs.create_account(
            org.org_id, account=name, user_id=user_id, password_hash="h", now=NOW
        )
    await stores.orgs.record_login(org.org_id, 10, ok=False, reason="wrong_password", now=NOW + 1)
    await stores.orgs.record_login(org.org_id, 11, ok=True, reason="", now=NOW + 2)
    await stores.orgs.record_login(org.org_id, 10, ok=True, reason="", now=NOW + 3)
    records = await stores.orgs.login_records(org.org_id, 10, limit=10)
    assert [(r.ts, r.ok, r.reason) for r in records] == [
        (NOW + 3, True, ""),
        (NOW + 1, False, "wrong_password"),
    ]
    assert len(await stores.orgs.login_records(org.org_id, 10, limit=1)) == 1
    assert [r.user_id for r in await stores.orgs.login_records(org.org_id, 11, limit=10)] == [11]
    assert await stores.orgs.login_records(org.org_id, 12, limit=10) == []
    with pytest.raises(KeyError):
        await stores.orgs.record_login(org.org_id, 12, ok=True, reason="", now=NOW)


async def test_o4_dissolution_deletes_accounts_and_login_records(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    keep = await stores.orgs.create_org(name="Keep", disclosure="", creator=2, now=NOW)
    await stores.orgs.create_account(
        org.org_id, account="bob", user_id=10, password_hash="h", now=NOW
    )
    await stores.orgs.create_account(
        keep.org_id, account="kim", user_id=20, password_hash="h", now=NOW
    )
    await stores.orgs.record_login(org.org_id, 10, ok=True, reason="", now=NOW)
    await stores.orgs.mark_dissolving(org.org_id, now=NOW + 1)
    while await stores.orgs.delete_chunk(org.org_id, limit=1):
        pass
    assert await stores.orgs.account_of_user(10) is None
    assert await stores.orgs.get_account(org.org_id, "bob") is None
    assert await stores.orgs.login_records(org.org_id, 10, limit=10) == []
    assert (await stores.orgs.account_of_user(20)) is not None


async def test_o4_list_accounts_pages_an_orgs_accounts_whatever_their_status(
    stores: Stores,
) -> None:
    """O4/P5: dissolution finds every enterprise account of the organisation (and no other
    organisation's, D6), cancelled ones included, page by page."""
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    other = await stores.orgs.create_org(name="Other", disclosure="", creator=2, now=NOW)
    for user_id, name in ((12, "carol"), (10, "alice"), (11, "bob")):
        await stores.orgs.create_account(
            org.org_id, account=name, user_id=user_id, password_hash="h", now=NOW
        )
    await stores.orgs.create_account(
        other.org_id, account="zed", user_id=20, password_hash="h", now=NOW
    )
    await stores.orgs.set_account_status(org.org_id, 11, status="cancelled")
    first = await stores.orgs.list_accounts(org.org_id, limit=2)
    assert [(a.account, a.user_id) for a in first] == [("alice", 10), ("bob", 11)]
    assert first[1].status == "cancelled"
    rest = await stores.orgs.list_accounts(org.org_id, after_account="bob", limit=2)
    assert [a.account for a in rest] == ["carol"]
    assert await stores.orgs.list_accounts(org.org_id, after_account="carol", limit=2) == []
    assert await stores.orgs.list_accounts(99, limit=2) == []
    # A dissolving organisation's accounts are still listed until its rows are deleted.
    await stores.orgs.mark_dissolving(org.org_id, now=NOW + 1)
    assert len(await stores.orgs.list_accounts(org.org_id, limit=10)) == 3
    while await stores.orgs.delete_chunk(org.org_id, limit=2):
        pass
    assert await stores.orgs.list_accounts(org.org_id, limit=10) == []
