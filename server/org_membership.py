"""Ending a membership of an organisation: one rule for a member who leaves, one an admin
removes, and an enterprise account that ends with its dissolved organisation (D4, O4 with
P5)."""

from __future__ import annotations

import contextlib
import logging

from server.org_feed import OrgFeeds
from server.org_index import OrgIndex
from storage.stores import Stores

log = logging.getLogger(__name__)


async def end_membership(stores: Stores, org_id: int, user_id: int, *, now: int) -> None:
    """D4: consent does not outlive a membership. A grant in force is revoked as the
    membership ends, at the same millisecond: membership spans are told apart by time
    alone, so a grant made just before leaving would otherwise count for a membership
    begun in that same millisecond (found by the consent fuzz test). The revocation is
    written first: if removing the member then fails, the member is still in, without
    consent (nothing is copied that should not be)."""
    history = await stores.consent.consent_history(user_id, org_id)
    if history and history[-1].granted:
        await stores.consent.set_consent(user_id=user_id, org_id=org_id, granted=False, now=now)
    await stores.orgs.remove_member(org_id, user_id, now=now)


async def end_other_memberships(
    stores: Stores,
    org_index: OrgIndex,
    org_feeds: OrgFeeds,
    user_id: int,
    *,
    ending_org: int,
    now: int,
) -> None:
    """O4 with P5 and A1: an enterprise account that ends with its dissolved organisation
    (``ending_org``, whose own rows the dissolution deletes) leaves every other organisation
    it had joined, as a member who leaves; otherwise an erased account stayed a member
    there for good (found by the organisation property test). Idempotent: a resumed
    dissolution finds those memberships gone.

    A primary admin's membership is kept, and logged: nobody else holds that role, and
    choosing a successor is that organisation's decision, not this job's."""
    for membership in await stores.orgs.orgs_of(user_id):
        if membership.org_id == ending_org:
            continue
        if membership.role == "primary":
            log.warning(
                "an ended enterprise account stays primary admin of another organisation",
                extra={"user_id": user_id, "org_id": membership.org_id},
            )
            continue
        # The membership may have ended since ``orgs_of`` (the user left, an admin removed
        # them): then there is nothing left to end, and the round goes on.
        with contextlib.suppress(KeyError):
            await end_membership(stores, membership.org_id, user_id, now=now)
        org_feeds.drop_user(membership.org_id, user_id)
    org_index.invalidate(user_id)
