"""Conformance: the organisation store (D2) and consent records (D1/D4), every backend."""

from __future__ import annotations

import pytest

from storage.consent import consented_at
from storage.errors import AlreadyExists
from storage.orgs import NewCopy, OrgCopy
from storage.stores import Stores

NOW = 1_000_000


def bodies(copies: list[OrgCopy]) -> list[bytes | None]:
    return [c.body for c in copies]


async def test_p3_creating_an_organisation_makes_the_creator_primary_admin(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="we audit", creator=7, now=NOW)
    assert (org.org_id, org.name, org.verified) == (1, "Acme", False)
    assert await stores.orgs.get_org(org.org_id) == org
    primary = await stores.orgs.get_member(org.org_id, 7)
    assert primary is not None and primary.role == "primary" and primary.may("export")
    assert [m.org_id for m in await stores.orgs.orgs_of(7)] == [org.org_id]
    assert await stores.orgs.get_org(99) is None


async def test_p2_verified_names_are_unique_among_verified_organisations(stores: Stores) -> None:
    first = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    second = await stores.orgs.create_org(name="Acme", disclosure="", creator=2, now=NOW)
    verified = await stores.orgs.set_verified(first.org_id, verified=True, now=NOW + 1)
    assert verified.verified and verified.verified_at == NOW + 1
    with pytest.raises(AlreadyExists):
        await stores.orgs.set_verified(second.org_id, verified=True, now=NOW + 2)
    assert not (await stores.orgs.get_org(second.org_id)).verified  # type: ignore[union-attr]
    await stores.orgs.set_verified(first.org_id, verified=False, now=NOW + 3)
    assert (await stores.orgs.set_verified(second.org_id, verified=True, now=NOW + 4)).verified


async def test_p4_membership_spans_roles_and_leaving(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="d", creator=1, now=NOW)
    member = await stores.orgs.add_member(org.org_id, 5, role="member", disclosure="d", now=NOW + 1)
    assert member.active and member.disclosure_accepted == "d" and not member.may("audit")
    with pytest.raises(AlreadyExists):
        await stores.orgs.add_member(org.org_id, 5, role="member", disclosure="d", now=NOW + 2)
    admin = await stores.orgs.set_role(
        org.org_id, 5, role="admin", permissions=frozenset({"audit"})
    )
    assert admin.may("audit") and not admin.may("export")
    assert [
        m.user_id for m in await stores.orgs.list_members(org.org_id, after_user=0, limit=10)
    ] == [1, 5]
    left = await stores.orgs.remove_member(org.org_id, 5, now=NOW + 3)
    assert left.left_at == NOW + 3 and not left.may("audit")
    with pytest.raises(KeyError):
        await stores.orgs.remove_member(org.org_id, 5, now=NOW + 4)
    await stores.orgs.add_member(org.org_id, 5, role="member", disclosure="d2", now=NOW + 5)
    assert await stores.orgs.membership_spans(org.org_id, 5) == [
        (NOW + 1, NOW + 3),
        (NOW + 5, None),
    ]
    assert await stores.orgs.member_ids(org.org_id, [1, 5, 9]) == {1, 5}
    assert await stores.orgs.orgs_of(9) == []


async def test_p4_join_requests_compare_and_set(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="d", creator=1, now=NOW)
    request = await stores.orgs.create_request(
        org.org_id,
        user_id=5,
        kind="invite",
        inviter=1,
        status="pending_user",
        disclosure="d",
        note="join us",
        now=NOW,
    )
    assert await stores.orgs.get_request(org.org_id, request.request_id) == request
    done = await stores.orgs.set_request_status(
        org.org_id, request.request_id, expect="pending_user", status="accepted", now=NOW + 1
    )
    assert done is not None and done.status == "accepted" and done.updated_at == NOW + 1
    again = await stores.orgs.set_request_status(
        org.org_id, request.request_id, expect="pending_user", status="declined", now=NOW + 2
    )
    assert again is None
    other = await stores.orgs.create_request(
        org.org_id,
        user_id=6,
        kind="apply",
        inviter=6,
        status="pending_admin",
        disclosure="d",
        note="",
        now=NOW,
    )
    assert [r.request_id for r in await stores.orgs.list_requests(org.org_id)] == [
        request.request_id,
        other.request_id,
    ]
    assert await stores.orgs.list_requests(org.org_id, status="pending_admin") == [other]
    assert await stores.orgs.list_requests(org.org_id, user_id=5) == [done]


async def test_d4_copies_are_idempotent_by_source_and_filterable(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    oid = org.org_id
    first, dup = await stores.orgs.add_copy(
        oid, NewCopy(member=5, conv_ref="r1", ts=10, body=b"a", source="s1")
    )
    assert not dup and first.copy_id == 1
    same, dup = await stores.orgs.add_copy(
        oid, NewCopy(member=5, conv_ref="r1", ts=10, body=b"a", source="s1")
    )
    assert dup and same == first
    await stores.orgs.add_copy(oid, NewCopy(member=6, conv_ref="r2", ts=20, body=b"b", source="s2"))
    await stores.orgs.add_copy(oid, NewCopy(member=5, conv_ref="r2", ts=30, body=b"c", source="s3"))
    assert bodies(await stores.orgs.copies(oid, limit=10)) == [b"a", b"b", b"c"]
    assert bodies(await stores.orgs.copies(oid, member=5, limit=10)) == [b"a", b"c"]
    assert bodies(await stores.orgs.copies(oid, conv_ref="r2", limit=10)) == [b"b", b"c"]
    assert bodies(await stores.orgs.copies(oid, from_ts=20, to_ts=30, limit=10)) == [b"b"]
    assert bodies(await stores.orgs.copies(oid, after_copy=1, limit=1)) == [b"b"]
    hidden = await stores.orgs.set_copy_state(oid, 2, hidden=True)
    assert hidden.hidden
    assert bodies(await stores.orgs.copies(oid, limit=10)) == [b"a", b"c"]
    assert bodies(await stores.orgs.copies(oid, limit=10, include_hidden=True)) == [
        b"a",
        b"b",
        b"c",
    ]
    recalled = await stores.orgs.set_copy_state(oid, 1, recalled=True)
    assert recalled.recalled and recalled.body is None
    assert await stores.orgs.copy_counts(oid) == {5: 1}
    assert await stores.orgs.get_copy(oid, 3) is not None
    with pytest.raises(KeyError):
        await stores.orgs.set_copy_state(oid, 99, hidden=True)


async def test_p3_audit_log_appends_in_order(stores: Stores) -> None:
    org = await stores.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    a = await stores.orgs.append_audit(org.org_id, actor=1, action="export", target="all", now=NOW)
    b = await stores.orgs.append_audit(
        org.org_id, actor=1, action="hide", target="copy:2", now=NOW + 1
    )
    assert (a.audit_id, b.audit_id) == (1, 2)
    assert await stores.orgs.audit_log(org.org_id, after=0, limit=10) == [a, b]
    assert await stores.orgs.audit_log(org.org_id, after=1, limit=10) == [b]


async def test_organisations_do_not_see_each_others_rows(stores: Stores) -> None:
    one = await stores.orgs.create_org(name="One", disclosure="", creator=1, now=NOW)
    two = await stores.orgs.create_org(name="Two", disclosure="", creator=2, now=NOW)
    await stores.orgs.add_copy(
        one.org_id, NewCopy(member=1, conv_ref="r", ts=1, body=b"x", source="s")
    )
    await stores.orgs.append_audit(one.org_id, actor=1, action="a", target="t", now=NOW)
    assert await stores.orgs.copies(two.org_id, limit=10) == []
    assert await stores.orgs.audit_log(two.org_id, after=0, limit=10) == []
    copy, dup = await stores.orgs.add_copy(
        two.org_id, NewCopy(member=2, conv_ref="r", ts=1, body=b"y", source="s")
    )
    assert not dup and copy.copy_id == 1  # same source, another organisation: its own copy


async def test_d4_consent_history_and_current_state(stores: Stores) -> None:
    consent = stores.consent
    assert await consent.consents_of(5) == {}
    await consent.set_consent(user_id=5, org_id=1, granted=True, now=100)
    await consent.set_consent(user_id=5, org_id=1, granted=False, now=200)
    await consent.set_consent(user_id=5, org_id=2, granted=True, now=150)
    history = await consent.consent_history(5, 1)
    assert [(c.granted, c.at) for c in history] == [(True, 100), (False, 200)]
    assert await consent.consents_of(5) == {1: False, 2: True}
    assert not consented_at(history, 99)
    assert not consented_at(history, 100)  # a grant counts from the next moment on a tie
    assert consented_at(history, 101) and consented_at(history, 199)
    assert not consented_at(history, 200)  # a revocation at the same moment wins
    assert await consent.consent_history(6, 1) == []


async def test_o4_dissolution_deletes_in_chunks_and_leaves_other_orgs(stores: Stores) -> None:
    orgs = stores.orgs
    doomed = await orgs.create_org(name="Doomed", disclosure="", creator=1, now=NOW)
    kept = await orgs.create_org(name="Kept", disclosure="", creator=1, now=NOW)
    for org in (doomed, kept):
        await orgs.add_member(org.org_id, 5, role="member", disclosure="", now=NOW)
        for i in range(7):
            await orgs.add_copy(
                org.org_id, NewCopy(member=5, conv_ref="r", ts=i, body=b"x", source=f"s{i}")
            )
        await orgs.append_audit(org.org_id, actor=1, action="a", target="t", now=NOW)
        await orgs.create_request(
            org.org_id,
            user_id=9,
            kind="apply",
            inviter=9,
            status="pending_admin",
            disclosure="",
            note="",
            now=NOW,
        )
    summary = await orgs.summary(doomed.org_id)
    assert (summary.members, summary.copies, summary.requests, summary.audit_entries) == (
        2,
        7,
        1,
        1,
    )
    marked = await orgs.mark_dissolving(doomed.org_id, now=NOW + 1)
    assert marked.dissolving_at == NOW + 1
    assert (await orgs.mark_dissolving(doomed.org_id, now=NOW + 2)).dissolving_at == NOW + 1
    assert await orgs.dissolving() == [doomed.org_id]
    assert [m.org_id for m in await orgs.orgs_of(5)] == [kept.org_id]  # gone for every path
    chunks = []
    while (deleted := await orgs.delete_chunk(doomed.org_id, limit=3)) > 0:
        chunks.append(deleted)
    assert sum(chunks) == 7 + 1 + 1 + 2 and max(chunks) <= 3
    assert await orgs.get_org(doomed.org_id) is None
    assert await orgs.dissolving() == []
    assert await orgs.delete_chunk(doomed.org_id, limit=3) == 0
    assert len(await orgs.copies(kept.org_id, limit=100)) == 7
    assert (await orgs.summary(kept.org_id)).members == 2
