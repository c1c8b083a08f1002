"""Dropping redeliveries (sans-I/O).

Rivet delivers every durable event at least once per device: live and again in a sync page
around a reconnect. A message is identified by (conv, seq); other durable events by their
stream position, which counts per store: organisation-internal conversations (``o:...``)
have a stream of their own, so a position is only unique with its store. Memory stays
small: per conversation, the highest seq below which every seq was seen plus the few seen
above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.events import (
    ContactEvent,
    MessageEvent,
    ReadEvent,
    RecallEvent,
    SettingsEvent,
    SyncEvent,
)
from protocol.ids import conversation_org


@dataclass(slots=True)
class _Seqs:
    floor: int = 0
    above: set[int] = field(default_factory=set)

    def add(self, seq: int) -> bool:
        floor = self.floor
        if seq <= floor:
            return False
        above = self.above
        if seq == floor + 1 and not above:
            # In order with nothing seen above: the usual case, no set to touch.
            self.floor = seq
            return True
        if seq in above:
            return False
        above.add(seq)
        while floor + 1 in above:
            floor += 1
            above.discard(floor)
        self.floor = floor
        return True


#: ``isinstance`` tuples, built once (``A | B`` in an ``isinstance`` builds a union per call).
_BY_STREAM = (RecallEvent, ReadEvent)
_BY_PSTREAM = (ContactEvent, SettingsEvent)


@dataclass
class Deduper:
    _messages: dict[str, _Seqs] = field(default_factory=dict)
    _streams: set[tuple[bool, int]] = field(default_factory=set)
    _pstreams: set[int] = field(default_factory=set)
    redeliveries: int = 0

    def start_at(self, conv: str, seq: int) -> None:
        """Everything up to ``seq`` in ``conv`` is known (e.g. from a summary or history)."""
        seqs = self._messages.get(conv)
        if seqs is None:
            seqs = self._messages[conv] = _Seqs()
        if seq > seqs.floor:
            seqs.floor = seq
            seqs.above = {s for s in seqs.above if s > seq}

    def accept(self, event: SyncEvent) -> bool:
        """True the first time an event is seen, False for a redelivery."""
        # Once per event of every page and every live push: no object is made unless a
        # conversation is new (``setdefault`` made a ``_Seqs`` on every call).
        if isinstance(event, MessageEvent):
            seqs = self._messages.get(event.conv)
            if seqs is None:
                seqs = self._messages[event.conv] = _Seqs()
            fresh = seqs.add(event.seq)
        elif isinstance(event, _BY_STREAM):
            position = (conversation_org(event.conv) is not None, event.stream)
            fresh = position not in self._streams
            self._streams.add(position)
        elif isinstance(event, _BY_PSTREAM):
            fresh = event.pstream not in self._pstreams
            self._pstreams.add(event.pstream)
        else:
            return True
        if not fresh:
            self.redeliveries += 1
        return fresh

    def seen(self, conv: str, seq: int) -> bool:
        seqs = self._messages.get(conv)
        return seqs is not None and (seq <= seqs.floor or seq in seqs.above)
