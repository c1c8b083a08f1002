"""The record of every group live stream (rule L1), and the store that keeps it.

A stream's record lives in the store of the group where it started (today every group is
cross-domain, so ``cross.db``; an organisation's internal groups will keep theirs in the
organisation's store). Only the record is durable: who is watching, hands, co-hosts and
signals are the server's in-memory state and are never stored.

The record is written when the stream starts, so a server that restarts finds the streams
that were live (``active_lives``) and gives their hosts a grace period to come back; it is
completed when the stream ends (end time, reason, peak and total viewers).

Contracts, for every implementation (``tests/storage/test_live_conformance.py``):

* each method is one transaction, durable before it returns (see ``storage.interfaces``);
* a stream is *active* until ``end_live``; the writes that change an active stream
  (``add_live_links``, ``add_live_invites``, ``checkpoint_live``) do nothing and return
  False on an ended or unknown stream;
* the store decides nothing: who may start, watch or end a stream is the router's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class NewLive(msgspec.Struct, frozen=True, kw_only=True):
    #: The group it starts in; its ``number`` is counted per origin.
    origin: str
    host: int
    host_device: int
    title: str
    description: str
    #: Groups linked at the start, the origin excluded, in the order given.
    links: tuple[str, ...] = ()
    started_at: int


class LiveRecord(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    number: int
    host: int
    host_device: int
    title: str
    description: str
    #: Linked groups, the origin excluded, in the order they were linked.
    links: tuple[str, ...]
    #: Users the host invited explicitly, ascending.
    invited: tuple[int, ...]
    started_at: int
    ended_at: int | None = None
    end_reason: str | None = None
    #: Most viewers at once, and distinct viewers in all (as of the last checkpoint while
    #: active; final once ended).
    peak_viewers: int = 0
    total_viewers: int = 0

    @property
    def active(self) -> bool:
        return self.ended_at is None


class LiveStore(Protocol):
    async def start_live(self, live: NewLive) -> LiveRecord:
        """Record a new active stream. Its ``number`` is one more than the highest number
        recorded for ``live.origin`` (1 for the first), so numbers are never reused."""

    async def add_live_links(self, origin: str, number: int, *, groups: Sequence[str]) -> bool:
        """Append ``groups`` not linked yet (nor the origin) to the stream's links, in the
        order given. False, writing nothing, unless the stream is active."""

    async def add_live_invites(self, origin: str, number: int, *, users: Sequence[int]) -> bool:
        """Add ``users`` to the stream's invited users (duplicates ignored). False, writing
        nothing, unless the stream is active."""

    async def checkpoint_live(
        self, origin: str, number: int, *, peak_viewers: int, total_viewers: int
    ) -> bool:
        """Store the viewer figures of an active stream so far. False, writing nothing,
        unless the stream is active."""

    async def end_live(
        self,
        origin: str,
        number: int,
        *,
        ended_at: int,
        reason: str,
        peak_viewers: int,
        total_viewers: int,
    ) -> LiveRecord | None:
        """End an active stream with its final figures and return the record. A stream that
        already ended is returned unchanged (the first end wins); None if there is none."""

    async def get_live(self, origin: str, number: int) -> LiveRecord | None: ...

    async def delete_lives(self, origin_prefix: str, *, limit: int) -> int:
        """O4: delete up to ``limit`` records (with their links and invitations) of streams
        whose origin group id starts with ``origin_prefix``, in one transaction; returns how
        many records went (0: none is left). Used when the origin groups are deleted too (their
        ids never come back), so numbering after it is not a concern."""

    async def active_lives(self) -> list[LiveRecord]:
        """Every active stream, ascending by (``started_at``, ``origin``, ``number``)."""
