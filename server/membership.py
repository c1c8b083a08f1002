"""A cache of group member ids for fan-out, so a message to a group does not read every
member from the store.

Entries are dropped whenever this process commits a membership change to the group. The
cache is per process: with several server processes, a shared bus must carry the same
invalidation (noted in docs/architecture.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from protocol.ids import conversation_kind, direct_participants
from storage.interfaces import CrossDomainStore


class MemberCache:
    def __init__(
        self, store_for: Callable[[str], CrossDomainStore], *, max_groups: int = 10_000
    ) -> None:
        #: The store that keeps a conversation (``server/domains.py``).
        self._store_for = store_for
        self._groups: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._max = max_groups
        #: Bumped on every invalidation, so a read that raced a change is not cached.
        self._generation = 0

    def known_member_ids(self, conv_id: str) -> tuple[int, ...] | None:
        """``member_ids`` when it needs no store read (a single chat, or a group in the
        cache), else None: without a checkpoint, so a caller that must not be cancelled
        between a commit and its publication takes this path first."""
        if conversation_kind(conv_id) != "group":
            low, high = direct_participants(conv_id)
            return (low,) if low == high else (low, high)
        cached = self._groups.get(conv_id)
        if cached is not None:
            self._groups.move_to_end(conv_id)
        return cached

    async def member_ids(self, conv_id: str) -> tuple[int, ...]:
        known = self.known_member_ids(conv_id)
        if known is not None:
            return known
        generation = self._generation
        members = tuple(await self._store_for(conv_id).member_ids(conv_id))
        if generation != self._generation:
            return members
        self._groups[conv_id] = members
        if len(self._groups) > self._max:
            self._groups.popitem(last=False)
        return members

    async def seeing(self, conv_id: str, seq: int) -> list[int]:
        """The current members who can see message ``seq``: a recall is news only to them.
        A member added after it to a group that hides its history never saw it, and ``sync``
        never replays that recall to them (the store's visibility rule): pushing it live
        would tell them of a message from before they joined, once and on one device only.
        One who saw it in an earlier membership and was added back is told (M4: their
        devices hold its content).
        Every recall pushes to this audience: a member's, an organisation's, the
        moderators', an erased account's."""
        members = await self.member_ids(conv_id)
        if conversation_kind(conv_id) != "group":
            return list(members)
        late = set(await self._store_for(conv_id).joined_after(conv_id, seq))
        return [user for user in members if user not in late]

    def invalidate(self, conv_id: str) -> None:
        self._generation += 1
        self._groups.pop(conv_id, None)
