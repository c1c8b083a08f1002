"""``Deduper`` against a plain model: every (conv, seq) and stream position once."""

from __future__ import annotations

import random

from client.dedup import Deduper
from protocol.events import ContactEvent, MessageEvent, ReadEvent, SyncEvent


def _message(conv: str, seq: int) -> MessageEvent:
    return MessageEvent(stream=seq, conv=conv, seq=seq, msg_id=seq, sender=1, ts=0)


def test_messages_in_any_order_are_accepted_once() -> None:
    rng = random.Random(7)
    dedup = Deduper()
    seen: set[tuple[str, int]] = set()
    redeliveries = 0
    for _ in range(5000):
        conv = rng.choice(["s:1", "s:2", "g:3"])
        # Mostly in order, with gaps, reorderings and redeliveries.
        seq = max(1, len([k for k in seen if k[0] == conv]) + rng.randint(-3, 3))
        fresh = (conv, seq) not in seen
        assert dedup.accept(_message(conv, seq)) is fresh
        assert dedup.seen(conv, seq)
        seen.add((conv, seq))
        redeliveries += not fresh
    assert dedup.redeliveries == redeliveries
    # The floor only folds contiguous seqs: what is above it is kept apart.
    for conv, seqs in dedup._messages.items():
        assert all((conv, s) in seen for s in range(1, seqs.floor + 1))
        assert (conv, seqs.floor + 1) not in seen
        assert all(s > seqs.floor + 1 for s in seqs.above)


def test_start_at_marks_history_seen() -> None:
    dedup = Deduper()
    assert dedup.accept(_message("s:1", 7))
    dedup.start_at("s:1", 5)
    assert not dedup.accept(_message("s:1", 3))
    assert not dedup.accept(_message("s:1", 7))
    assert dedup.accept(_message("s:1", 6))
    assert dedup._messages["s:1"].floor == 7
    assert dedup._messages["s:1"].above == set()
    dedup.start_at("s:9", 2)
    assert not dedup.accept(_message("s:9", 2))
    assert dedup.accept(_message("s:9", 3))
    assert dedup.redeliveries == 3


def test_positions_and_other_events() -> None:
    dedup = Deduper()
    read = ReadEvent(stream=4, conv="s:1", user=2, seq=1)
    contact = ContactEvent(pstream=9, user_id=2, state="accepted")
    events: list[SyncEvent] = [read, read, contact, contact]
    assert [dedup.accept(e) for e in events] == [True, False, True, False]
    assert dedup.redeliveries == 2
