"""Conformance: effects recorded with an entry, in its transaction (the outbox, D4)."""

from __future__ import annotations

import pytest

from storage.errors import NotAMember
from storage.records import IdempotencyKey, NewEntry
from storage.stores import Stores
from tests.storage.test_cross_conformance import NOW, create_group


def message(
    sender: int, body: bytes, *, effects: tuple[str, ...] = ("org_copy",), **kw: object
) -> NewEntry:
    return NewEntry(
        conv_id="g:1",
        kind="message",
        sender=sender,
        ts=NOW,
        body=body,
        effects=effects,
        require_member=sender,
        **kw,  # type: ignore[arg-type]
    )


async def test_effects_are_recorded_with_their_entry_and_listed_in_order(stores: Stores) -> None:
    cross = stores.cross
    await create_group(cross)
    first = (await cross.append(message(2, b"one"))).entry
    second = (await cross.append(message(3, b"two", effects=("org_copy", "audit")))).entry
    await cross.append(message(2, b"none", effects=()))
    pending = await cross.pending_effects(after=0, limit=10)
    assert [(p.kind, p.entry.stream) for p in pending] == [
        ("org_copy", first.stream),
        ("org_copy", second.stream),
        ("audit", second.stream),
    ]
    assert pending[0].entry.body == b"one"
    ids = [p.effect_id for p in pending]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [p.effect_id for p in await cross.pending_effects(after=ids[0], limit=1)] == [ids[1]]


async def test_finished_effects_are_gone_and_finishing_twice_is_harmless(stores: Stores) -> None:
    cross = stores.cross
    await create_group(cross)
    await cross.append(message(2, b"one"))
    (pending,) = await cross.pending_effects(after=0, limit=10)
    await cross.finish_effect(pending.effect_id)
    await cross.finish_effect(pending.effect_id)
    assert await cross.pending_effects(after=0, limit=10) == []


async def test_a_failed_append_records_no_effect(stores: Stores) -> None:
    cross = stores.cross
    await create_group(cross, members=(1, 2))
    with pytest.raises(NotAMember):
        await cross.append(message(9, b"intruder"))
    assert await cross.pending_effects(after=0, limit=10) == []


async def test_a_duplicate_append_records_no_second_effect(stores: Stores) -> None:
    cross = stores.cross
    await create_group(cross)
    key = IdempotencyKey(sender=2, client_id="c1", fingerprint=b"f")
    await cross.append(message(2, b"one", idempotency=key))
    again = await cross.append(message(2, b"one", idempotency=key))
    assert again.duplicate
    assert len(await cross.pending_effects(after=0, limit=10)) == 1


async def test_a_pending_effect_sees_a_later_recall(stores: Stores) -> None:
    cross = stores.cross
    await create_group(cross)
    sent = (await cross.append(message(2, b"secret"))).entry
    await cross.recall(conv_id="g:1", seq=sent.seq, by=2, now=NOW)
    (pending,) = await cross.pending_effects(after=0, limit=10)
    assert pending.entry.recalled and pending.entry.body is None
