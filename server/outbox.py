"""The outbox relay: carries out effects recorded with entries, across stores (D4).

``CrossDomainStore.append`` records an entry's effects in the entry's own transaction; this
relay carries them out afterwards and marks each one finished only after it succeeded. A
crash at any point leaves the effect pending, so it runs again after a restart: at least
once, made exactly-once by the target's idempotency (a copy is keyed by its source entry).

The one effect today is ``org_copy:<org ids>``: copy the sender's own message into the
store of each listed organisation (those the sender belonged to when sending) for which
``server.policy`` says the consent rule allows it at the message's time. Both conversation
stores record effects: the cross-domain one (D4: a consenting member's own words) and the
organisations' (D2: every message there is an enterprise account's, copied without
consent). A copy of an organisation-internal message names its source ``org:<conv>:<seq>``,
so an admin's recall of it can reach the organisation's own conversation (O1).

DINGs follow the same rule (issue #4): ``DingStore.create`` records the same ``org_copy``
effect in the DING's own transaction, in whichever DING store keeps it (cross-domain or
the organisations'), and this relay drains both DING stores as further sources through the
same ``_copy_to`` (one consent check for messages and DINGs). A DING's copy holds its text
and creation time, and an opaque reference of its own (nothing of its recipients); it is
keyed ``ding:<x|o>:<number>`` (``copy_source.ding_copy_source``), which no admin recall
follows: a DING is never rewritten by an admin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec
import trio

from protocol.orgs import OrgCopyEvent
from protocol.requests import Content
from server import policy
from server.background import Nudge, run_rounds
from server.copy_source import copy_source, ding_copy_source
from server.org_feed import OrgFeeds
from server.services.admin import copy_info
from storage.consent import ConsentStore
from storage.ding import DingStore
from storage.ding_records import Ding, DingDomain, PendingDingEffect
from storage.interfaces import CrossDomainStore
from storage.keys import KeysDestroyed
from storage.orgs import NewCopy, OrganisationStore
from storage.records import Entry, PendingEffect

log = logging.getLogger(__name__)

ORG_COPY = "org_copy"
_content_decoder = msgspec.msgpack.Decoder(Content)
_encoder = msgspec.msgpack.Encoder()


def org_copy_effect(org_ids: tuple[int, ...]) -> tuple[str, ...]:
    """The effects to record with a message (or a DING) whose sender belongs to
    ``org_ids``."""
    if not org_ids:
        return ()
    return (f"{ORG_COPY}:{','.join(map(str, org_ids))}",)


def _org_copy_targets(effect_kind: str) -> list[int] | None:
    """The organisations an ``org_copy`` effect names; None (logged) for another kind."""
    kind, _, args = effect_kind.partition(":")
    if kind != ORG_COPY:
        log.error("unknown effect kind; dropped", extra={"kind": kind})
        return None
    return [int(org) for org in args.split(",") if org]


class OutboxRelay:
    def __init__(
        self,
        *,
        cross: CrossDomainStore,
        org_conversations: CrossDomainStore,
        orgs: OrganisationStore,
        consent: ConsentStore,
        feeds: OrgFeeds,
        ref_key: bytes,
        dings: Mapping[DingDomain, DingStore] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._sources = (("cross", cross), ("org", org_conversations))
        #: The DING stores (sealed: their texts come opened), by the kind of DING they keep.
        self._dings: tuple[tuple[DingDomain, DingStore], ...] = tuple((dings or {}).items())
        self._orgs = orgs
        self._consent = consent
        self._feeds = feeds
        self._ref_key = ref_key
        self._poll_interval = poll_interval
        #: Something was recorded: run soon (coalesced; never blocks).
        self.kick = Nudge()
        self.copied = 0
        self.finished = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(
            "outbox relay",
            self.drain,
            self.kick,
            every=self._poll_interval,
            task_status=task_status,
        )

    async def drain(self) -> None:
        """Carry out every pending effect of each conversation store, then of each DING
        store, oldest first."""
        for source, store in self._sources:
            after = 0
            while True:
                pending = await store.pending_effects(after=after, limit=200)
                if not pending:
                    break
                for effect in pending:
                    await self._apply(source, effect)
                    await store.finish_effect(effect.effect_id)
                    self.finished += 1
                after = pending[-1].effect_id
        for domain, dings in self._dings:
            after = 0
            while True:
                waiting = await dings.pending_effects(after=after, limit=200)
                if not waiting:
                    break
                for ding_effect in waiting:
                    await self._apply_ding(domain, ding_effect)
                    await dings.finish_effect(ding_effect.effect_id)
                    self.finished += 1
                after = waiting[-1].effect_id

    async def _apply(self, source: str, effect: PendingEffect) -> None:
        org_ids = _org_copy_targets(effect.kind)
        if org_ids is not None:
            await self._copy(source, effect.entry, org_ids)

    async def _apply_ding(self, domain: DingDomain, effect: PendingDingEffect) -> None:
        org_ids = _org_copy_targets(effect.kind)
        if org_ids is not None and effect.ding is not None:
            await self._copy_ding(domain, effect.ding, org_ids)

    async def _copy(self, source: str, entry: Entry, org_ids: list[int]) -> None:
        if entry.kind != "message" or entry.body is None or entry.recalled:
            return  # recalled before it was copied: there is nothing of it left to copy
        content = _content_decoder.decode(entry.body)
        await self._copy_to(
            org_ids,
            member=entry.sender,
            at=entry.ts,
            body=_encoder.encode(policy.copy_content(content)),
            reference=entry.conv_id,
            source=copy_source(source, entry),
        )

    async def _copy_ding(self, domain: DingDomain, ding: Ding, org_ids: list[int]) -> None:
        """D4 for a DING: its text, judged at its creation (the moment it committed)."""
        if not ding.text:
            return  # A1/A3/O4: its sealed text is gone (erased): nothing of it to copy
        await self._copy_to(
            org_ids,
            member=ding.sender,
            at=ding.created_at,
            body=_encoder.encode(policy.ding_copy_content(ding.text)),
            # Its reference is made from the sender's own key of it (sender, cmid) only, not
            # from the store's number, which counts other people's DINGs too (D4).
            reference=f"ding:{ding.sender}:{ding.cmid}",
            source=ding_copy_source(domain, ding.ding_id),
        )

    async def _copy_to(
        self, org_ids: list[int], *, member: int, at: int, body: bytes, reference: str, source: str
    ) -> None:
        """The consent rule, once for every kind of data (D4): copy ``body``, which
        ``member`` produced at ``at``, into each of ``org_ids`` for which ``policy.may_copy``
        allows it. ``reference`` is what the copy's opaque ``conv_ref`` is made from (per
        organisation); ``source`` keys the copy, so a repeat stores nothing."""
        account = await self._orgs.account_of_user(member)
        for org_id in org_ids:
            spans = await self._orgs.membership_spans(org_id, member)
            history = await self._consent.consent_history(member, org_id)
            own_account = account is not None and account.org_id == org_id
            if not policy.may_copy(
                spans=spans, consent=history, at=at, enterprise_account=own_account
            ):
                continue
            try:
                copy, duplicate = await self._orgs.add_copy(
                    org_id,
                    NewCopy(
                        member=member,
                        conv_ref=policy.conversation_ref(self._ref_key, org_id, reference),
                        ts=at,
                        body=body,
                        source=source,
                    ),
                )
            except KeysDestroyed:
                continue  # O4/A3: the organisation is being dissolved; it takes no more copies
            if not duplicate:
                self.copied += 1
                self._feeds.publish(org_id, OrgCopyEvent(org=org_id, copy=copy_info(copy)))

    def statistics(self) -> dict[str, int]:
        return {"copied": self.copied, "finished": self.finished}
