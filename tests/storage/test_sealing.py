"""A3: the stores sealed at rest (``storage.sealing``), on every backend.

The raw store underneath is read to check what is actually stored; the sealed one to check
that the server sees what it wrote, and sees erased content once the keys are gone.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from typing import Any, get_type_hints

import msgspec
import pytest

from storage import interfaces, moderation, orgs
from storage.crypto import MasterKey, WrongMasterKey, parse
from storage.errors import IdempotencyConflict
from storage.keys import KeysDestroyed
from storage.moderation import NewAct, NewReport
from storage.orgs import NewCopy
from storage.records import Entry, IdempotencyKey, NewConversation, NewEntry
from storage.sealing import (
    DataKeys,
    SealedCrossDomainStore,
    SealedModerationStore,
    SealedOrganisationStore,
    data_keys,
    seal_stores,
)
from storage.stores import Stores

NOW = 1_000_000
CONV = "d:1:2"


@pytest.fixture
async def sealed(stores: Stores) -> AsyncIterator[Stores]:
    yield seal_stores(stores, MasterKey.generate(), use_limit=5, lease=2)


def message(sender: int, text: str, *, n: int, create: bool = False) -> NewEntry:
    return NewEntry(
        conv_id=CONV,
        kind="message",
        sender=sender,
        ts=NOW + n,
        body=text.encode(),
        cmid=f"c{n}",
        idempotency=IdempotencyKey(sender=sender, client_id=f"m:c{n}", fingerprint=b"fp%d" % n),
        create=NewConversation(
            conv_id=CONV,
            kind="direct",
            title="",
            owner_id=None,
            member_limit=2,
            members=((1, "member"), (2, "member")),
        )
        if create
        else None,
    )


async def entries(stores: Stores) -> list[Entry]:
    """Every entry of the conversation, through ``stores``."""
    return await stores.cross.history(
        CONV, visible_from=1, visible_to=None, before_seq=None, limit=100
    )


async def say(stores: Stores, sender: int, text: str, *, n: int) -> int:
    appended = await stores.cross.append(message(sender, text, n=n, create=n == 1))
    assert appended.entry.body == text.encode()  # the caller sees what it wrote
    return appended.entry.seq


async def test_a3_message_bodies_are_sealed_in_the_store_and_open_for_the_server(
    stores: Stores, sealed: Stores
) -> None:
    await say(sealed, 1, "first words", n=1)
    await say(sealed, 2, "an answer", n=2)
    raw = await entries(stores)
    for entry in raw:
        assert entry.body is not None and parse(entry.body) is not None
        assert b"words" not in entry.body and b"answer" not in entry.body
    seen = await entries(sealed)
    assert [e.body for e in seen] == [b"first words", b"an answer"]
    assert [e.body for e in await sealed.cross.entries_for(1, after=0, limit=9)] == [
        b"first words",
        b"an answer",
    ]
    got = await sealed.cross.get_entry(CONV, 1)
    assert got is not None and got.body == b"first words"
    (summary,) = await sealed.cross.summaries(1, changed_after=0)
    assert summary.last_message is not None and summary.last_message.body == b"an answer"


async def test_a3_resends_are_deduplicated_and_conflicts_still_caught(sealed: Stores) -> None:
    await say(sealed, 1, "once", n=1)
    again = await sealed.cross.append(message(1, "once", n=1, create=True))
    assert again.duplicate and again.entry.body == b"once"
    changed = msgspec.structs.replace(
        message(1, "other", n=1),
        idempotency=IdempotencyKey(sender=1, client_id="m:c1", fingerprint=b"different"),
    )
    with pytest.raises(IdempotencyConflict):
        await sealed.cross.append(changed)


async def test_a3_pending_effects_carry_opened_bodies(sealed: Stores) -> None:
    entry = msgspec.structs.replace(message(1, "copy me", n=1, create=True), effects=("x",))
    await sealed.cross.append(entry)
    (effect,) = await sealed.cross.pending_effects(after=0, limit=5)
    assert effect.entry.body == b"copy me"


async def test_a3_keys_rotate_at_the_use_limit_and_old_bodies_still_open(
    stores: Stores, sealed: Stores
) -> None:
    # use_limit=5: key 1 seals 5 bodies, key 2 the next 5, key 3 the rest.
    for n in range(1, 13):
        await say(sealed, 1, f"message {n}", n=n)
    raw = await entries(stores)
    key_ids = [parse(e.body).key_id for e in raw if e.body]  # type: ignore[union-attr]
    assert key_ids == [1] * 5 + [2] * 5 + [3] * 2
    stored = (await stores.keys.load("user:1")).keys
    assert [(k.key_id, k.reserved) for k in stored] == [(1, 5), (2, 5), (3, 2)]
    assert all(k.reserved <= data_keys(sealed).use_limit for k in stored)
    seen = await entries(sealed)
    assert [e.body for e in seen] == [f"message {n}".encode() for n in range(1, 13)]
    assert data_keys(sealed).rotations == 2


async def test_a3_keys_rotate_on_demand(stores: Stores, sealed: Stores) -> None:
    await say(sealed, 1, "before", n=1)
    assert await data_keys(sealed).rotate("user:1") == 2
    await say(sealed, 1, "after", n=2)
    raw = await entries(stores)
    assert [parse(e.body).key_id for e in raw] == [1, 2]  # type: ignore[union-attr, arg-type]
    seen = await entries(sealed)
    assert [e.body for e in seen] == [b"before", b"after"]


async def test_a1_destroyed_keys_erase_the_owners_content_and_nobody_elses(
    sealed: Stores,
) -> None:
    await say(sealed, 1, "mine", n=1)
    await say(sealed, 2, "theirs", n=2)
    await say(sealed, 1, "mine again", n=3)
    assert await sealed.keys.destroy("user:1", now=NOW) == 1
    seen = await entries(sealed)
    assert [(e.seq, e.body, e.recalled) for e in seen] == [
        (1, None, True),
        (2, b"theirs", False),
        (3, None, True),
    ]
    with pytest.raises(KeysDestroyed):
        await sealed.cross.append(message(1, "after deletion", n=4))
    with pytest.raises(KeysDestroyed):
        await data_keys(sealed).rotate("user:1")


async def test_a1_destruction_reaches_a_second_process_too(stores: Stores) -> None:
    master = MasterKey.generate()
    first = seal_stores(stores, master, use_limit=5, lease=2)
    await say(first, 1, "words", n=1)
    second = DataKeys(stores.keys, master)
    await second.destroy("user:1", now=NOW)
    # A process that never cached the keys sees the body as erased.
    fresh = seal_stores(stores, master)
    got = await fresh.cross.get_entry(CONV, 1)
    assert got is not None and got.recalled and got.body is None


async def test_a3_a_body_moved_to_another_row_reads_as_erased(stores: Stores) -> None:
    # The memory store keeps records, so move the sealed body by appending it raw elsewhere.
    sealed = seal_stores(stores, MasterKey.generate())
    await say(sealed, 1, "original", n=1)
    raw = await stores.cross.get_entry(CONV, 1)
    assert raw is not None and raw.body is not None
    await stores.cross.append(
        NewEntry(conv_id=CONV, kind="message", sender=1, ts=NOW + 2, body=raw.body, cmid="c2")
    )
    moved = await sealed.cross.get_entry(CONV, 2)
    assert moved is not None and moved.recalled and moved.body is None
    await stores.cross.append(
        NewEntry(conv_id=CONV, kind="message", sender=2, ts=NOW + 1, body=raw.body, cmid="c1")
    )
    other_sender = await sealed.cross.get_entry(CONV, 3)
    assert other_sender is not None and other_sender.recalled
    assert data_keys(sealed).unverified == 1  # the second one had no key of user 2 at all


async def test_a3_system_entries_stay_plain(stores: Stores, sealed: Stores) -> None:
    await say(sealed, 1, "hi", n=1)
    await sealed.cross.append(
        NewEntry(conv_id=CONV, kind="system", sender=1, ts=NOW + 5, body=b"system-info")
    )
    raw = await stores.cross.get_entry(CONV, 2)
    assert raw is not None and raw.body == b"system-info"
    seen = await sealed.cross.get_entry(CONV, 2)
    assert seen is not None and seen.body == b"system-info"


async def test_d2_copies_are_sealed_with_the_organisations_key(
    stores: Stores, sealed: Stores
) -> None:
    org = await sealed.orgs.create_org(name="Acme", disclosure="", creator=1, now=NOW)
    new = NewCopy(member=1, conv_ref="ref", ts=NOW, body=b"copied words", source="cross:1")
    copy, duplicate = await sealed.orgs.add_copy(org.org_id, new)
    assert not duplicate and copy.body == b"copied words"
    again, duplicate = await sealed.orgs.add_copy(org.org_id, new)
    assert duplicate and again.body == b"copied words"
    (raw,) = await stores.orgs.copies(org.org_id, limit=5)
    assert raw.body is not None and b"copied" not in raw.body and parse(raw.body) is not None
    assert [c.body for c in await sealed.orgs.copies(org.org_id, limit=5)] == [b"copied words"]
    got = await sealed.orgs.get_copy(org.org_id, copy.copy_id)
    assert got is not None and got.body == b"copied words"
    hidden = await sealed.orgs.set_copy_state(org.org_id, copy.copy_id, hidden=True)
    assert hidden.body == b"copied words" and hidden.hidden
    assert (await stores.keys.load(f"org:{org.org_id}")).keys
    assert not (await stores.keys.load("user:1")).keys  # copies never use the member's key
    await sealed.keys.destroy(f"org:{org.org_id}", now=NOW)
    (erased,) = await sealed.orgs.copies(org.org_id, limit=5, include_hidden=True)
    assert erased.body is None and erased.recalled


async def test_c1_evidence_is_sealed_with_the_writers_key(stores: Stores, sealed: Stores) -> None:
    report, _ = await sealed.moderation.add_report(
        NewReport(
            reporter=2,
            target_user=1,
            conv_id=CONV,
            seq=1,
            reason="spam",
            evidence=b"bad words",
            created_at=NOW,
        )
    )
    assert report.evidence == b"bad words"
    act = await sealed.moderation.record_act(
        NewAct(
            action="hide",
            operator="op",
            reason="spam",
            target_user=1,
            conv_id=CONV,
            seq=1,
            evidence=b"bad words",
            created_at=NOW + 1,
        )
    )
    assert act.evidence == b"bad words"
    raw_report = await stores.moderation.get_report(report.report_id)
    (raw_act,) = await stores.moderation.acts(after_id=0, limit=5)
    for stored in (raw_report.evidence, raw_act.evidence):  # type: ignore[union-attr]
        assert stored is not None and b"bad" not in stored
    (listed,) = await sealed.moderation.list_reports(status=None, after_id=0, limit=5)
    assert listed.evidence == b"bad words"
    assert [a.evidence for a in await sealed.moderation.acts(after_id=0, limit=5)] == [b"bad words"]
    await sealed.keys.destroy("user:1", now=NOW)
    gone = await sealed.moderation.get_report(report.report_id)
    assert gone is not None and gone.evidence is None
    with pytest.raises(ValueError):
        await sealed.moderation.record_act(
            NewAct(action="hide", operator="op", reason="r", evidence=b"x", created_at=NOW)
        )


async def test_a3_another_master_key_is_refused_not_taken_for_erasure(stores: Stores) -> None:
    first = seal_stores(stores, MasterKey.generate())
    await say(first, 1, "words", n=1)
    await data_keys(first).check_master()
    other = seal_stores(stores, MasterKey.generate())
    with pytest.raises(WrongMasterKey):
        await data_keys(other).check_master()
    with pytest.raises(WrongMasterKey):
        await other.cross.get_entry(CONV, 1)


async def test_a3_a_rotation_elsewhere_is_picked_up(stores: Stores) -> None:
    master = MasterKey.generate()
    server = seal_stores(stores, master, lease=2)
    await say(server, 1, "one", n=1)
    operator = DataKeys(stores.keys, master)  # e.g. `rivet keys rotate` in another process
    assert await operator.rotate("user:1") == 2
    await say(server, 1, "two", n=2)  # still within the lease of key 1
    await say(server, 1, "three", n=3)  # the next reservation fails: key 2 is newest
    raw = await entries(stores)
    assert [parse(e.body).key_id for e in raw] == [1, 1, 2]  # type: ignore[union-attr, arg-type]
    # And a body sealed by the other process's newer key opens here (the ring reloads).
    await seal_stores(stores, master).cross.get_entry(CONV, 1)
    await operator.rotate("user:1")
    other = seal_stores(stores, master)
    await say(other, 1, "four", n=4)
    seen = await server.cross.get_entry(CONV, 4)
    assert seen is not None and seen.body == b"four"


async def test_a3_the_key_cache_is_bounded(stores: Stores) -> None:
    sealed = seal_stores(stores, MasterKey.generate(), capacity=2)
    for sender in (1, 2):
        await say(sealed, sender, f"from {sender}", n=sender)
    for n in range(3, 9):  # alternate senders: every seal may evict the other ring
        await say(sealed, 1 + n % 2, f"m{n}", n=n)
    assert data_keys(sealed).statistics()["owners_cached"] <= 2
    seen = await entries(sealed)
    assert all(e.body is not None and not e.recalled for e in seen)


async def test_a3_sealing_stores_twice_is_refused(sealed: Stores) -> None:
    with pytest.raises(ValueError):
        seal_stores(sealed, MasterKey.generate())


# --- the wrappers' contract ----------------------------------------------------------------

#: Record types that hold a body (or contain one that may).
_BODIES = {
    "Entry",
    "NewEntry",
    "Appended",
    "PendingEffect",
    "Summary",
    "Recall",
    "ReadMoved",
    "OrgCopy",
    "NewCopy",
    "ReportRecord",
    "NewReport",
    "ActRecord",
    "NewAct",
}


def _mentions_body(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return any(name in _BODIES for name in re.findall(r"\w+", text))


@pytest.mark.parametrize(
    ("protocol", "wrapper"),
    [
        (interfaces.CrossDomainStore, SealedCrossDomainStore),
        (orgs.OrganisationStore, SealedOrganisationStore),
        (moderation.ModerationStore, SealedModerationStore),
    ],
)
def test_a3_every_method_with_a_body_is_sealed_or_opened(protocol: type, wrapper: type) -> None:
    """A method added to a store interface that takes or returns a body must be overridden
    by its sealing wrapper (or sealed bodies would reach the server, or plaintext the disk).
    """
    for name, method in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = get_type_hints(method, vars(interfaces) | vars(orgs) | vars(moderation))
        if any(_mentions_body(hint) for hint in hints.values()):
            assert name in vars(wrapper), f"{wrapper.__name__} must override {name}"
            ours = inspect.signature(vars(wrapper)[name])
            assert list(ours.parameters) == list(inspect.signature(method).parameters), name
