"""O4: dissolving an organisation, as a resumable job.

Confirming marks the organisation as dissolving in its own store (one transaction); from
then on every path treats it as gone. This job then deletes its rows in short chunks, each
its own transaction, and finally the organisation itself. Whatever the job had not done when
the process died is found again at start (``OrganisationStore.dissolving``) and finished.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio

from storage.orgs import OrganisationStore

log = logging.getLogger(__name__)

#: Rows per delete transaction: small enough that other organisations' writes never wait
#: long behind one large dissolution (docs/storage-organisations.md measured ~4-5 ms).
CHUNK = 1000

#: Called once an organisation is completely gone (e.g. to destroy its keys, A3).
OnDissolved = Callable[[int], Awaitable[object]]


class Dissolver:
    def __init__(
        self, store: OrganisationStore, *, on_dissolved: OnDissolved | None = None
    ) -> None:
        self._store = store
        self._on_dissolved = on_dissolved
        self._kick_send, self._kick_receive = trio.open_memory_channel[None](1)
        self.dissolved = 0

    def kick(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._kick_send.send_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.finish_all()
            except Exception:
                log.exception("dissolution failed; it resumes on the next attempt")
            with trio.move_on_after(30):
                await self._kick_receive.receive()

    async def finish_all(self) -> None:
        for org_id in await self._store.dissolving():
            while await self._store.delete_chunk(org_id, limit=CHUNK) > 0:
                await trio.lowlevel.checkpoint()
            if self._on_dissolved is not None:
                await self._on_dissolved(org_id)
            self.dissolved += 1
            log.info("organisation dissolved", extra={"org_id": org_id})
