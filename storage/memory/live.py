"""The in-memory live-stream store: the reference implementation of ``LiveStore``.

No method awaits, so each is atomic under trio. Records are frozen and replaced on change.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec.structs import replace

from storage.live import LiveRecord, NewLive


class MemoryLiveStore:
    def __init__(self) -> None:
        self._records: dict[tuple[str, int], LiveRecord] = {}
        self._highest: dict[str, int] = {}

    async def start_live(self, live: NewLive) -> LiveRecord:
        number = self._highest.get(live.origin, 0) + 1
        links = tuple(dict.fromkeys(g for g in live.links if g != live.origin))
        record = LiveRecord(
            origin=live.origin,
            number=number,
            host=live.host,
            host_device=live.host_device,
            title=live.title,
            description=live.description,
            links=links,
            invited=(),
            started_at=live.started_at,
        )
        self._highest[live.origin] = number
        self._records[(live.origin, number)] = record
        return record

    async def add_live_links(self, origin: str, number: int, *, groups: Sequence[str]) -> bool:
        record = self._active(origin, number)
        if record is None:
            return False
        links = tuple(dict.fromkeys((*record.links, *(g for g in groups if g != origin))))
        self._records[(origin, number)] = replace(record, links=links)
        return True

    async def add_live_invites(self, origin: str, number: int, *, users: Sequence[int]) -> bool:
        record = self._active(origin, number)
        if record is None:
            return False
        invited = tuple(sorted(set(record.invited) | set(users)))
        self._records[(origin, number)] = replace(record, invited=invited)
        return True

    async def checkpoint_live(
        self, origin: str, number: int, *, peak_viewers: int, total_viewers: int
    ) -> bool:
        record = self._active(origin, number)
        if record is None:
            return False
        self._records[(origin, number)] = replace(
            record, peak_viewers=peak_viewers, total_viewers=total_viewers
        )
        return True

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
        record = self._records.get((origin, number))
        if record is None or not record.active:
            return record
        ended = replace(
            record,
            ended_at=ended_at,
            end_reason=reason,
            peak_viewers=peak_viewers,
            total_viewers=total_viewers,
        )
        self._records[(origin, number)] = ended
        return ended

    async def get_live(self, origin: str, number: int) -> LiveRecord | None:
        return self._records.get((origin, number))

    async def delete_lives(self, origin_prefix: str, *, limit: int) -> int:
        doomed = sorted(k for k in self._records if k[0].startswith(origin_prefix))[:limit]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    async def active_lives(self) -> list[LiveRecord]:
        active = [r for r in self._records.values() if r.active]
        return sorted(active, key=lambda r: (r.started_at, r.origin, r.number))

    def _active(self, origin: str, number: int) -> LiveRecord | None:
        record = self._records.get((origin, number))
        return record if record is not None and record.active else None
