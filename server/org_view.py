"""The capability every admin path holds: one organisation's own store, for one admin.

D5: an admin path reaches data only through an ``OrgView``, and only ``server.policy`` can
make one (it holds ``_MINT``; ``tests/server/test_admin_imports.py`` fails if any other
module touches it, or if an admin-facing module imports a store). An ``OrgView`` exposes
the organisation store's methods bound to its organisation, and nothing else: no personal
or cross-domain store is reachable from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from protocol.ids import conversation_org
from server.clock import Clock
from server.connection import Connection
from server.copy_source import org_conversation_source
from server.org_feed import OrgFeeds
from storage.orgs import AuditEntry, OrganisationStore, OrgCopy, OrgMember

_MINT = object()

#: Where new audit entries go besides the log: the real-time feed.
AuditListener = Callable[[AuditEntry], None]
#: O1: recall message (conv, seq) of the organisation's own conversation for everyone in
#: it, as admin ``by``; False if there is no such message.
OwnRecall = Callable[[str, int, int], Awaitable[bool]]


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
        recall_own: OwnRecall | None = None,
    ) -> None:
        if mint is not _MINT:
            raise TypeError("only the router's policy module makes an OrgView")
        self._store = store
        self.org_id = org_id
        self.admin = admin
        self._clock = clock
        self._on_audit = on_audit
        self._feeds = feeds
        self._recall_own = recall_own

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

    async def withdraw_source(self, copy: OrgCopy) -> bool:
        """O1: if ``copy`` was made from the organisation's own conversation (D2), recall
        that message there for everyone in it. A copy of a cross-domain message has no such
        source: that conversation belongs to its participants and is never rewritten by an
        admin. True if a message was withdrawn."""
        source = org_conversation_source(copy.source)
        if source is None:
            return False
        conv_id, seq = source
        if conversation_org(conv_id) != self.org_id:
            return False  # not this organisation's conversation: never touched
        if self._recall_own is None:
            raise RuntimeError("this view was made without the power to recall")
        return await self._recall_own(conv_id, seq, self.admin.user_id)

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
