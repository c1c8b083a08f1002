"""Conformance: M2 group capacity in the organisation store (D2), every backend: the
group-expansion package (idempotent top-ups, spends per member, exhaustion writes nothing)
and the expansions it paid for (per tier, renewal extends, lapsed ones still listed,
dissolution deletes them)."""

from __future__ import annotations

import pytest

from storage.errors import IdempotencyConflict
from storage.group_capacity import GroupPackage, PackageExhausted
from storage.records import IdempotencyKey
from storage.stores import Stores

NOW = 1_000_000
DAY = 86_400_000


def key(sender: int, client_id: str, fingerprint: bytes = b"f") -> IdempotencyKey:
    return IdempotencyKey(sender=sender, client_id=client_id, fingerprint=fingerprint)


async def test_m2_top_up_is_idempotent_by_key(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    assert await stores.orgs.group_package(org.org_id) == GroupPackage(org_id=org.org_id)
    package, duplicate = await stores.orgs.top_up_group_package(
        org.org_id, units=100, key=key(1, "t1", b"100"), now=NOW
    )
    assert (package.granted, package.used, package.remaining, duplicate) == (100, 0, 100, False)
    again, duplicate = await stores.orgs.top_up_group_package(
        org.org_id, units=100, key=key(1, "t1", b"100"), now=NOW + 1
    )
    assert (again.granted, duplicate) == (100, True)
    with pytest.raises(IdempotencyConflict):
        await stores.orgs.top_up_group_package(
            org.org_id, units=5, key=key(1, "t1", b"5"), now=NOW + 2
        )
    # The same client id from another admin is another request.
    other, duplicate = await stores.orgs.top_up_group_package(
        org.org_id, units=5, key=key(2, "t1", b"5"), now=NOW + 3
    )
    assert (other.granted, duplicate) == (105, False)
    with pytest.raises(KeyError):
        await stores.orgs.top_up_group_package(99, units=1, key=key(1, "x"), now=NOW)


async def test_m2_expansion_spends_the_package_per_member_and_renewal_extends(
    stores: Stores,
) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    await stores.orgs.top_up_group_package(org.org_id, units=25, key=key(1, "t"), now=NOW)
    first, duplicate = await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=1000,
        price=10,
        period_ms=30 * DAY,
        key=key(5, "e1", b"g:7:1000"),
        now=NOW,
    )
    assert (first.org_id, first.conv_id, first.member_limit, first.paid_by) == (
        org.org_id,
        "g:7",
        1000,
        5,
    )
    assert (first.expires_at, duplicate) == (NOW + 30 * DAY, False)
    resent, duplicate = await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=1000,
        price=10,
        period_ms=30 * DAY,
        key=key(5, "e1", b"g:7:1000"),
        now=NOW + 5,
    )
    assert (resent, duplicate) == (first, True)
    # Renewing before it lapsed adds a period to its end, paid by whoever renews.
    renewed, _ = await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=1000,
        price=10,
        period_ms=30 * DAY,
        key=key(6, "e2", b"g:7:1000"),
        now=NOW + DAY,
    )
    assert (renewed.expires_at, renewed.paid_by, renewed.updated_at) == (
        NOW + 60 * DAY,
        6,
        NOW + DAY,
    )
    package = await stores.orgs.group_package(org.org_id)
    assert (package.granted, package.used, package.remaining) == (25, 20, 5)
    assert package.by_member == {5: 10, 6: 10}
    # Exhausted: nothing is written, neither the spend nor the expansion.
    with pytest.raises(PackageExhausted):
        await stores.orgs.expand_group(
            org.org_id,
            conv_id="g:7",
            member_limit=2000,
            price=10,
            period_ms=30 * DAY,
            key=key(5, "e3", b"g:7:2000"),
            now=NOW + DAY,
        )
    assert (await stores.orgs.group_package(org.org_id)).used == 20
    assert [e.member_limit for e in await stores.orgs.group_expansions("g:7")] == [1000]
    with pytest.raises(IdempotencyConflict):
        await stores.orgs.expand_group(
            org.org_id,
            conv_id="g:8",
            member_limit=1000,
            price=1,
            period_ms=DAY,
            key=key(5, "e1", b"g:8:1000"),
            now=NOW + DAY,
        )


async def test_m2_renewal_after_a_lapse_starts_from_now_and_lapsed_ones_are_listed(
    stores: Stores,
) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    other = await stores.orgs.create_org(name="Beta", disclosure="", creator=2, now=NOW)
    for org_id in (org.org_id, other.org_id):
        await stores.orgs.top_up_group_package(org_id, units=100, key=key(1, "t"), now=NOW)
    await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=2000,
        price=1,
        period_ms=DAY,
        key=key(1, "a"),
        now=NOW,
    )
    await stores.orgs.expand_group(
        other.org_id,
        conv_id="g:7",
        member_limit=1000,
        price=1,
        period_ms=DAY,
        key=key(2, "b"),
        now=NOW,
    )
    await stores.orgs.expand_group(
        other.org_id,
        conv_id="g:9",
        member_limit=1000,
        price=1,
        period_ms=DAY,
        key=key(2, "c"),
        now=NOW,
    )
    later = NOW + 10 * DAY
    listed = await stores.orgs.group_expansions("g:7")
    assert [(e.member_limit, e.org_id) for e in listed] == [
        (1000, other.org_id),
        (2000, org.org_id),
    ]
    assert not any(e.active(later) for e in listed)
    renewed, _ = await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=2000,
        price=1,
        period_ms=DAY,
        key=key(1, "d"),
        now=later,
    )
    assert renewed.expires_at == later + DAY and renewed.active(later)
    assert await stores.orgs.group_expansions("g:404") == []


async def test_o4_dissolution_deletes_the_package_and_its_expansions(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    await stores.orgs.top_up_group_package(org.org_id, units=10, key=key(1, "t"), now=NOW)
    await stores.orgs.expand_group(
        org.org_id,
        conv_id="g:7",
        member_limit=1000,
        price=1,
        period_ms=DAY,
        key=key(1, "e"),
        now=NOW,
    )
    await stores.orgs.mark_dissolving(org.org_id, now=NOW + 1)
    # A dissolving organisation's expansions no longer count.
    assert await stores.orgs.group_expansions("g:7") == []
    while await stores.orgs.delete_chunk(org.org_id, limit=1):
        pass
    assert await stores.orgs.get_org(org.org_id) is None
    assert await stores.orgs.group_package(org.org_id) == GroupPackage(org_id=org.org_id)
