"""O4: dissolving an organisation, as a resumable job.

Confirming marks the organisation as dissolving in its own store (one transaction); from
then on every path treats it as gone. This job then deletes its rows in short chunks, each
its own transaction, and finally the organisation itself. Whatever the job had not done when
the process died is found again at start (``OrganisationStore.dissolving``) and finished.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from server.background import Nudge, run_rounds
from storage.orgs import OrganisationStore

log = logging.getLogger(__name__)

#: Rows per delete transaction: small enough that other organisations' writes never wait
#: long behind one large dissolution (docs/storage-organisations.md measured ~4-5 ms).
CHUNK = 1000

#: Called for a dissolving organisation before its rows are deleted, again on every resumed
#: attempt until it is gone, so it must be idempotent (it destroys the organisation's keys,
#: A3: its copies are unreadable from then on, even before they are deleted).
OnDissolved = Callable[[int], Awaitable[object]]


class Dissolver:
    def __init__(
        self, store: OrganisationStore, *, on_dissolved: OnDissolved | None = None
    ) -> None:
        self._store = store
        self._on_dissolved = on_dissolved
        self.kick = Nudge()
        self.dissolved = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(
            "dissolution", self.finish_all, self.kick, every=30, task_status=task_status
        )

    async def finish_all(self) -> None:
        for org_id in await self._store.dissolving():
            if self._on_dissolved is not None:
                await self._on_dissolved(org_id)
            while await self._store.delete_chunk(org_id, limit=CHUNK) > 0:
                await trio.lowlevel.checkpoint()
            self.dissolved += 1
            log.info("organisation dissolved", extra={"org_id": org_id})
