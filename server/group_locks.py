"""One lock per group that a change holds or waits for (M1, M2; ``services/groups.py``).

A group change is decided by the policy on the group as it was read, and the store checks
only that the caller is still a member when the entry commits. Each connection is served
in its own task, so two changes to one group would otherwise interleave at the store's
write: a transfer to a member who leaves at that moment left the group owned by a former
member, and two adds each let in under the limit passed it together (found by the group
property test). So changes to one group run one at a time: read, decide, append.

Within one process: several server processes sharing one store would need the store to
check these preconditions itself when it commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class GroupLocks:
    """Locks only for groups that a change holds or waits for: none for idle groups."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, conv_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(conv_id, (trio.Lock(), 0))
        self._locks[conv_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[conv_id]
            if users == 1:
                del self._locks[conv_id]
            else:
                self._locks[conv_id] = (lock, users - 1)
