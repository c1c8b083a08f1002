"""Coalesced read counts for senders in groups.

A group of 10,000 members must not send its senders one event per member per read. Each
read marks its conversation's newly-read seq range dirty; once per ``interval`` the
coalescer computes the read counts of the dirty messages from the members' read positions
(no row per message per member, see ``CrossDomainStore.read_counts``) and sends each sender
one ``ev.receipts`` event per conversation with the counts of their messages. At most
``MAX_SEQS`` of the newest dirty messages are refreshed per conversation and interval; older
counts are always available on request with ``receipts.counts``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import msgspec
import trio

from protocol.events import ReceiptCountItem, ReceiptsEvent
from storage.interfaces import CrossDomainStore

MAX_SEQS = 200

Publish = Callable[[list[int], msgspec.Struct], None]


class ReceiptCoalescer:
    def __init__(
        self, store_for: Callable[[str], CrossDomainStore], publish: Publish, *, interval: float
    ) -> None:
        #: The store that keeps a conversation (``server/domains.py``).
        self._store_for = store_for
        self._publish = publish
        self._interval = interval
        self._dirty: dict[str, tuple[int, int]] = {}
        self.flushes = 0

    def mark(self, conv_id: str, *, first_seq: int, last_seq: int) -> None:
        if last_seq < first_seq:
            return
        known = self._dirty.get(conv_id)
        if known is not None:
            first_seq, last_seq = min(first_seq, known[0]), max(last_seq, known[1])
        self._dirty[conv_id] = (first_seq, last_seq)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for conv_id, (first, last) in dirty.items():
            first = max(first, last - MAX_SEQS + 1)
            store = self._store_for(conv_id)
            entries = await store.history(
                conv_id, visible_from=first, visible_to=last, before_seq=None, limit=MAX_SEQS
            )
            senders = {e.seq: e.sender for e in entries if e.kind == "message" and not e.recalled}
            if not senders:
                continue
            by_sender: dict[int, list[ReceiptCountItem]] = defaultdict(list)
            for count in await store.read_counts(conv_id, sorted(senders)):
                by_sender[senders[count.seq]].append(
                    ReceiptCountItem(seq=count.seq, read=count.read)
                )
            for sender, counts in by_sender.items():
                self._publish([sender], ReceiptsEvent(conv=conv_id, counts=counts))
        self.flushes += 1
