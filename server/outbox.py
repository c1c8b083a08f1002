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
"""

from __future__ import annotations

import logging

import msgspec
import trio

from protocol.orgs import OrgCopyEvent
from protocol.requests import Content
from server import policy
from server.background import Nudge, run_rounds
from server.copy_source import copy_source
from server.org_feed import OrgFeeds
from server.services.admin import copy_info
from storage.consent import ConsentStore
from storage.interfaces import CrossDomainStore
from storage.keys import KeysDestroyed
from storage.orgs import NewCopy, OrganisationStore
from storage.records import Entry, PendingEffect

log = logging.getLogger(__name__)

ORG_COPY = "org_copy"
_content_decoder = msgspec.msgpack.Decoder(Content)
_encoder = msgspec.msgpack.Encoder()


def org_copy_effect(org_ids: tuple[int, ...]) -> tuple[str, ...]:
    """The effects to record with a message whose sender belongs to ``org_ids``."""
    if not org_ids:
        return ()
    return (f"{ORG_COPY}:{','.join(map(str, org_ids))}",)


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
        poll_interval: float = 1.0,
    ) -> None:
        self._sources = (("cross", cross), ("org", org_conversations))
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
        """Carry out every pending effect of each conversation store, oldest first."""
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

    async def _apply(self, source: str, effect: PendingEffect) -> None:
        kind, _, args = effect.kind.partition(":")
        if kind != ORG_COPY:
            log.error("unknown effect kind; dropped", extra={"kind": kind})
            return
        await self._copy(source, effect.entry, [int(org) for org in args.split(",") if org])

    async def _copy(self, source: str, entry: Entry, org_ids: list[int]) -> None:
        if entry.kind != "message" or entry.body is None or entry.recalled:
            return  # recalled before it was copied: there is nothing of it left to copy
        content = _content_decoder.decode(entry.body)
        body = _encoder.encode(policy.copy_content(content))
        account = await self._orgs.account_of_user(entry.sender)
        for org_id in org_ids:
            spans = await self._orgs.membership_spans(org_id, entry.sender)
            history = await self._consent.consent_history(entry.sender, org_id)
            own_account = account is not None and account.org_id == org_id
            if not policy.may_copy(
                spans=spans, consent=history, at=entry.ts, enterprise_account=own_account
            ):
                continue
            try:
                copy, duplicate = await self._orgs.add_copy(
                    org_id,
                    NewCopy(
                        member=entry.sender,
                        conv_ref=policy.conversation_ref(self._ref_key, org_id, entry.conv_id),
                        ts=entry.ts,
                        body=body,
                        source=copy_source(source, entry),
                    ),
                )
            except KeysDestroyed:
                continue  # O4/A3: the organisation is being dissolved; it takes no more copies
            if not duplicate:
                self.copied += 1
                self._feeds.publish(org_id, OrgCopyEvent(org=org_id, copy=copy_info(copy)))

    def statistics(self) -> dict[str, int]:
        return {"copied": self.copied, "finished": self.finished}
