"""Live delivery in sequence order, per conversation.

Entries commit in seq order, but the tasks that committed them resume in whatever order
the scheduler picks, so two messages committed in one batch could be published 6 before
5. ``SeqOrderedPublisher`` puts them back in order: a conversation's entry is published
only after its predecessor; one that arrives early waits, briefly, in a small buffer.

If a predecessor never comes (its publisher failed after the commit), waiting entries are
released after ``max_hold`` seconds by ``run``; clients fill the gap with ``sync``. Entries
without a seq of their own (recalls, read positions) are published at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

Publish = Callable[[Iterable[int], bytes], None]


@dataclass
class _Conversation:
    next_seq: int
    held: dict[int, tuple[Iterable[int], bytes, float]] = field(default_factory=dict)


class SeqOrderedPublisher:
    def __init__(self, publish: Publish, *, max_hold: float = 0.5, max_tracked: int = 100_000):
        self._publish = publish
        self._max_hold = max_hold
        self._max_tracked = max_tracked
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        #: Conversations with held entries, so the overdue sweep touches only those.
        self._holding: set[str] = set()
        self.released_early = 0

    def publish(self, conv_id: str, seq: int, users: Iterable[int], frame: bytes) -> None:
        state = self._conversations.get(conv_id)
        if state is None:
            state = self._conversations[conv_id] = _Conversation(next_seq=seq)
            if len(self._conversations) > self._max_tracked:
                self._evict()
        else:
            self._conversations.move_to_end(conv_id)
        if seq < state.next_seq:
            self._publish(users, frame)  # older than what was released: never hold it back
            return
        if seq > state.next_seq:
            state.held[seq] = (users, frame, trio.current_time() + self._max_hold)
            self._holding.add(conv_id)
            return
        self._publish(users, frame)
        state.next_seq = seq + 1
        self._release_ready(state)
        if not state.held:
            self._holding.discard(conv_id)

    def _release_ready(self, state: _Conversation) -> None:
        while state.next_seq in state.held:
            users, frame, _ = state.held.pop(state.next_seq)
            self._publish(users, frame)
            state.next_seq += 1

    def _evict(self) -> None:
        for conv_id in list(self._conversations):
            if not self._conversations[conv_id].held:
                del self._conversations[conv_id]
                return

    def release_overdue(self) -> None:
        """Publish entries whose predecessor is overdue, skipping the gap."""
        now = trio.current_time()
        for conv_id in list(self._holding):
            state = self._conversations[conv_id]
            if min(deadline for _, _, deadline in state.held.values()) <= now:
                state.next_seq = min(state.held)
                self.released_early += 1
                self._release_ready(state)
            if not state.held:
                self._holding.discard(conv_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._max_hold / 2)
            self.release_overdue()

    def statistics(self) -> dict[str, int]:
        return {
            "tracked": len(self._conversations),
            "held": sum(len(self._conversations[c].held) for c in self._holding),
            "released_early": self.released_early,
        }
