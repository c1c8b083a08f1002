"""The capability every admin path holds: one organisation's own store, for one admin.

D5: an admin path reaches data only through an ``OrgView``, and only ``server.policy`` can
make one (it holds ``_MINT``; ``tests/server/test_admin_imports.py`` fails if any other
module touches it, or if an admin-facing module imports a store). An ``OrgView`` exposes
the organisation store's methods bound to its organisation, and nothing else: no personal
or cross-domain store is reachable from it.
"""

from __future__ import annotations

from collections.abc import Callable

from server.clock import Clock
from server.connection import Connection
from server.org_feed import OrgFeeds
from storage.orgs import AuditEntry, OrganisationStore, OrgCopy, OrgMember

_MINT = object()

#: Where new audit entries go besides the log: the real-time feed.
AuditListener = Callable[[AuditEntry], None]


class OrgView:
    def __init__(
        self,
        mint: object,
        *,
        store: OrganisationStore,
        org_id: int,
        admin: OrgMember,
        clock: Clock,
        on_audit: AuditListener,
        feeds: OrgFeeds,
    ) -> None:
        if mint is not _MINT:
            raise TypeError("only the router's policy module makes an OrgView")
        self._store = store
        self.org_id = org_id
        self.admin = admin
        self._clock = clock
        self._on_audit = on_audit
        self._feeds = feeds

    async def copies(
        self,
        *,
        member: int | None = None,
        conv_ref: str | None = None,
        from_ts: int | None = None,
        to_ts: int | None = None,
        after: int = 0,
        limit: int,
        include_hidden: bool = False,
    ) -> list[OrgCopy]:
        return await self._store.copies(
            self.org_id,
            member=member,
            conv_ref=conv_ref,
            from_ts=from_ts,
            to_ts=to_ts,
            after_copy=after,
            limit=limit,
            include_hidden=include_hidden,
        )

    async def get_copy(self, copy_id: int) -> OrgCopy | None:
        return await self._store.get_copy(self.org_id, copy_id)

    async def set_copy_state(
        self, copy_id: int, *, hidden: bool | None = None, recalled: bool = False
    ) -> OrgCopy:
        return await self._store.set_copy_state(
            self.org_id, copy_id, hidden=hidden, recalled=recalled
        )

    async def copy_counts(self) -> dict[int, int]:
        return await self._store.copy_counts(self.org_id)

    async def audit_log(self, *, after: int, limit: int) -> list[AuditEntry]:
        return await self._store.audit_log(self.org_id, after=after, limit=limit)

    def watch(self, connection: Connection, *, on: bool) -> None:
        """Start or stop this organisation's real-time feed on ``connection``."""
        self._feeds.watch(self.org_id, connection, on=on)

    async def record(self, action: str, target: str) -> AuditEntry:
        """P3: an admin act is the organisation's act; every one is logged and fed."""
        entry = await self._store.append_audit(
            self.org_id,
            actor=self.admin.user_id,
            action=action,
            target=target,
            now=self._clock.now_ms(),
        )
        self._on_audit(entry)
        return entry
