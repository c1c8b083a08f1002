"""O4: dissolving an organisation, as a resumable job.

Confirming marks the organisation as dissolving in its own store (one transaction); from
then on every path treats it as gone. This job then, for each dissolving organisation, runs
its steps in order, each idempotent:

1. ``_destroy_keys``: the organisation's data keys (A3).
2. ``_end_enterprise_accounts``: each of its enterprise accounts (P5) is ended the way a
   deleted account is (A1, ``AccountEraser.begin``): sessions end at once (tokens and
   refresh sessions invalid, live connections closed), and the account erasure job erases
   its user row's personal data. The accounts exist only for this organisation, so none
   outlives it. This runs before any row is deleted, because the organisation's
   ``enterprise_accounts`` rows are how a resumed job finds them again.
3. ``_delete_conversations``: its own conversations (D2, ids ``o:<org>:...``, in the
   organisation conversations store) and the records of live streams started in them, in
   short chunks, each its own transaction. Their bodies were sealed with the
   organisation's keys, so they were unreadable from step 1.
4. ``_delete_dings``: its own DINGs (D2, ids ``o<org>:<n>``, in the organisation DING
   store) with their steps, outbox rows and owed refunds, then its DING package (G2), in
   short chunks (``DingStore.delete_org_chunk``). Their texts were sealed with the
   organisation's keys (unreadable from step 1); a timer of a deleted step that still fires
   finds no step and does nothing, and from the confirmation on the package pays for
   nothing (the DING runtime asks whether the organisation is alive).
5. ``_delete_rows``: its rows in short chunks, each its own transaction, and finally the
   organisation itself (last: its row is how a resumed job finds the organisation).

Whatever the job had not done when the process died is found again at start
(``OrganisationStore.dissolving``, and ``PersonalStore.pending_deletions`` for the account
erasure) and finished.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from protocol.ids import org_conversation_prefix
from server.account_deletion import AccountEraser
from server.background import Nudge, run_rounds
from server.enterprise import EnterpriseIndex
from storage.ding import DingStore
from storage.enterprise import EnterpriseAccount
from storage.interfaces import CrossDomainStore
from storage.live import LiveStore
from storage.orgs import OrganisationStore

log = logging.getLogger(__name__)

#: Rows per delete transaction: small enough that other organisations' writes never wait
#: long behind one large dissolution (docs/storage-organisations.md measured ~4-5 ms).
CHUNK = 1000

#: Called for a dissolving organisation before its rows are deleted, again on every resumed
#: attempt until it is gone, so it must be idempotent (it destroys the organisation's keys,
#: A3: its copies are unreadable from then on, even before they are deleted).
OnDissolved = Callable[[int], Awaitable[object]]

#: Called for each enterprise account of a dissolving organisation (O4 with P5) before its
#: rows are deleted, again on every resumed attempt, so it must be idempotent.
EndAccount = Callable[[EnterpriseAccount], Awaitable[object]]
#: (user id, the dissolved organisation's id): the account leaves its other organisations.
LeaveOtherOrgs = Callable[[int, int], Awaitable[object]]

#: Accounts read per page while ending them.
ACCOUNT_PAGE = 500


def enterprise_account_ender(
    eraser: AccountEraser,
    enterprise: EnterpriseIndex,
    leave_other_orgs: LeaveOtherOrgs | None = None,
) -> EndAccount:
    """O4 with P5: end a dissolved organisation's enterprise account as ``account.delete``
    ends an account (A1), which refuses while the user is in an organisation: first it
    leaves the other organisations it had joined (``leave_other_orgs``), then one
    transaction ends its sessions and releases its placeholder phone, its live connections
    close (4004), and the erasure job erases its personal data and destroys its keys.
    Idempotent: repeating it for an account already ended or erased changes nothing."""

    async def end(account: EnterpriseAccount) -> None:
        if leave_other_orgs is not None:
            await leave_other_orgs(account.user_id, account.org_id)
        try:
            await eraser.begin(account.user_id, reason="organisation dissolved")
        except KeyError:
            log.warning(
                "enterprise account without a user row",
                extra={"org_id": account.org_id, "user_id": account.user_id},
            )
        enterprise.invalidate(account.user_id)

    return end


class Dissolver:
    def __init__(
        self,
        store: OrganisationStore,
        *,
        on_dissolved: OnDissolved | None = None,
        end_account: EndAccount | None = None,
        conversations: CrossDomainStore | None = None,
        lives: LiveStore | None = None,
        dings: DingStore | None = None,
        chunk: int = CHUNK,
        pause_seconds: float = 0.0,
    ) -> None:
        self._store = store
        self._on_dissolved = on_dissolved
        self._end_account = end_account
        self._conversations = conversations
        self._lives = lives
        #: The organisation DING store (never the cross-domain one: D3 DINGs stay).
        self._dings = dings
        #: Rows per delete transaction, and the pause between two of them (config
        #: ``dissolution_chunk_rows``, ``dissolution_pause_seconds``): a pause spreads a
        #: large organisation's deletion out so it never competes with live traffic.
        self._chunk = chunk
        self._pause = pause_seconds
        self.kick = Nudge()
        self.dissolved = 0
        #: Delete transactions done (every organisation, this process).
        self.chunks = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(
            "dissolution", self.finish_all, self.kick, every=30, task_status=task_status
        )

    async def finish_all(self) -> None:
        for org_id in await self._store.dissolving():
            await self._destroy_keys(org_id)
            await self._end_enterprise_accounts(org_id)
            await self._delete_conversations(org_id)
            await self._delete_dings(org_id)
            await self._delete_rows(org_id)
            self.dissolved += 1
            log.info("organisation dissolved", extra={"org_id": org_id})

    async def _destroy_keys(self, org_id: int) -> None:
        if self._on_dissolved is not None:
            await self._on_dissolved(org_id)

    async def _end_enterprise_accounts(self, org_id: int) -> None:
        """O4 with P5: every enterprise account of the organisation, whatever its status."""
        if self._end_account is None:
            return
        after = ""
        while page := await self._store.list_accounts(
            org_id, after_account=after, limit=ACCOUNT_PAGE
        ):
            for account in page:
                await self._end_account(account)
            after = page[-1].account

    async def _delete_conversations(self, org_id: int) -> None:
        """D2 with O4: the organisation's own conversations, whoever was in them, and what
        was started in them (L1: live stream records)."""
        prefix = org_conversation_prefix(org_id)
        if self._lives is not None:
            while await self._lives.delete_lives(prefix, limit=self._chunk) > 0:
                await self._after_chunk()
        if self._conversations is not None:
            while await self._conversations.delete_conversations(prefix, limit=self._chunk) > 0:
                await self._after_chunk()

    async def _delete_dings(self, org_id: int) -> None:
        """D2/G2 with O4: the organisation's own DINGs, then its DING package."""
        if self._dings is None:
            return
        while await self._dings.delete_org_chunk(org_id, limit=self._chunk) > 0:
            await self._after_chunk()

    async def _delete_rows(self, org_id: int) -> None:
        while await self._store.delete_chunk(org_id, limit=self._chunk) > 0:
            await self._after_chunk()

    async def _after_chunk(self) -> None:
        self.chunks += 1
        if self._pause > 0:
            await trio.sleep(self._pause)
        else:
            await trio.lowlevel.checkpoint()
