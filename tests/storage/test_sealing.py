"""A3: the stores sealed at rest (``storage.sealing``), on every backend.

The raw store underneath is read to check what is actually stored; the sealed one to check
that the server sees what it wrote, and sees erased content once the keys are gone.
"""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_type_hints

import msgspec
import pytest

from storage import ding, ding_records, group_capacity, interfaces, moderation, orgs
from storage.crypto import MasterKey, WrongMasterKey, parse
from storage.ding_records import NewDing, NewStep, QuotaCharge
from storage.errors import IdempotencyConflict
from storage.keys import KeysDestroyed
from storage.moderation import NewAct, NewReport
from storage.orgs import NewCopy
from storage.records import Entry, IdempotencyKey, NewConversation, NewEntry
from storage.sealing import (
    DataKeys,
    SealedCrossDomainStore,
    SealedDingStore,
    SealedModerationStore,
    SealedOrganisationStore,
    data_keys,
    ding_organisation_key,
    seal_stores,
)
from storage.stores import Stores
from tests.ding_steps import hand_over

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


# --- DINGs (A3 for G1-G3) --------------------------------------------------------------------

DING_TEXT = "the server room is on fire"
SMS_AT = NOW + 300_000


def new_ding(sender: int = 1, text: str = DING_TEXT, *, cmid: str = "d1") -> NewDing:
    recipients = (2, 3) if sender == 1 else (1, 3)
    steps = [NewStep(user_id=u, channel="in_app", due_at=NOW, state="sent") for u in recipients]
    steps += [NewStep(user_id=u, channel="sms", due_at=SMS_AT) for u in recipients]
    return NewDing(
        sender=sender,
        payer=f"user:{sender}",
        text=text,
        cmid=cmid,
        fingerprint=b"fp-" + cmid.encode(),
        state="sent",
        created_at=NOW,
        send_at=NOW,
        sms_after_s=300,
        call_after_s=None,
        recipients=recipients,
        steps=tuple(steps),
    )


def sms_charges(sender: int) -> dict[tuple[str, ding_records.ChannelName], QuotaCharge]:
    account = f"user:{sender}"
    charge = QuotaCharge(account=account, channel="sms", period="p", grant=9, member=sender)
    return {(account, "sms"): charge}


def sms_steps(found: ding_records.Ding) -> list[int]:
    return [s.step_id for r in found.recipients for s in r.steps if s.channel == "sms"]


async def test_a3_ding_text_is_sealed_with_the_senders_key_and_opens_on_every_read(
    stores: Stores, sealed: Stores
) -> None:
    created = await sealed.ding.create(new_ding())
    assert not created.duplicate and created.ding.text == DING_TEXT
    ding_id = created.ding.ding_id
    raw = await stores.ding.get(ding_id)
    assert raw is not None and raw.text == "" and raw.sealed is not None
    assert DING_TEXT.encode() not in raw.sealed and parse(raw.sealed) is not None
    assert (await stores.keys.load("user:1")).keys  # the sender's key (A1)
    assert sealed.ding.__class__ is SealedDingStore

    # Every read path opens it: get, both lists, and what writes return.
    got = await sealed.ding.get(ding_id)
    assert got is not None and (got.text, got.sealed) == (DING_TEXT, None)
    assert [d.text for d in await sealed.ding.list_sent(1, before=None, limit=5)] == [DING_TEXT]
    assert [d.text for d in await sealed.ding.list_received(2, before=None, limit=5)] == [DING_TEXT]
    (delivered,) = await sealed.ding.mark_delivered(ding_id, [2], now=NOW + 1)
    assert delivered.ding.text == DING_TEXT
    read = await sealed.ding.mark_read(ding_id, 2, now=NOW + 2)
    assert read is not None and read.ding.text == DING_TEXT
    handed = await hand_over(
        sealed.ding, sms_steps(created.ding), now=SMS_AT, charges=sms_charges(1)
    )
    assert [c.ding.text for _, c in handed.changed] == [DING_TEXT, DING_TEXT]
    items = await sealed.ding.claim_outbox(now=SMS_AT, limit=5)
    assert [i.text for i in items] == [DING_TEXT, DING_TEXT]  # what the SMS says
    sent = await sealed.ding.outbox_sent(items[0].step_id, now=SMS_AT + 1)
    retried = await sealed.ding.outbox_retry(
        items[1].step_id, next_attempt_at=SMS_AT + 9, now=SMS_AT + 1
    )
    for change in (sent, retried):
        assert change is not None and change.ding.text == DING_TEXT
    (item,) = await sealed.ding.claim_outbox(now=SMS_AT + 9, limit=5)
    failed = await sealed.ding.outbox_failed(item.step_id, now=SMS_AT + 10)
    assert failed is not None and failed.ding.text == DING_TEXT
    confirmed = await sealed.ding.confirm(ding_id, 3, now=SMS_AT + 11)
    assert confirmed is not None and confirmed.ding.text == DING_TEXT
    again = await sealed.ding.redding(
        ding_id,
        expect_round=1,
        now=SMS_AT + 12,
        steps=[NewStep(user_id=2, channel="in_app", due_at=SMS_AT + 12, state="sent")],
    )
    assert again is not None and again.text == DING_TEXT

    # A scheduled DING is released and cancelled with its text too.
    later = msgspec.structs.replace(
        new_ding(cmid="d2"),
        state="scheduled",
        send_at=SMS_AT,
        steps=(NewStep(user_id=2, channel="in_app", due_at=SMS_AT),),
        recipients=(2,),
    )
    scheduled = (await sealed.ding.create(later)).ding
    cancelled = await sealed.ding.cancel(scheduled.ding_id, now=NOW + 3)
    assert cancelled is not None and cancelled.text == DING_TEXT


async def test_a3_ding_resends_are_deduplicated_and_conflicts_caught(
    stores: Stores, sealed: Stores
) -> None:
    first = await sealed.ding.create(new_ding())
    again = await sealed.ding.create(new_ding())
    assert again.duplicate and again.ding.ding_id == first.ding.ding_id
    assert again.ding.text == DING_TEXT
    with pytest.raises(IdempotencyConflict):
        await sealed.ding.create(msgspec.structs.replace(new_ding(), fingerprint=b"other"))
    # The stored fingerprint is keyed, not the plain hash of the request (which would let
    # whoever holds the database confirm a guess of a short text).
    with pytest.raises(IdempotencyConflict):
        await stores.ding.create(new_ding())


async def test_a1_a_destroyed_key_erases_the_senders_dings_and_nobody_elses(
    sealed: Stores,
) -> None:
    mine = (await sealed.ding.create(new_ding(1, "mine"))).ding
    theirs = (await sealed.ding.create(new_ding(2, "theirs"))).ding
    await hand_over(sealed.ding, sms_steps(mine), now=SMS_AT, charges=sms_charges(1))
    await sealed.keys.destroy("user:1", now=NOW)
    for ding_id, text in ((mine.ding_id, ""), (theirs.ding_id, "theirs")):
        got = await sealed.ding.get(ding_id)
        assert got is not None and got.text == text
    assert [d.text for d in await sealed.ding.list_received(3, before=None, limit=5)] == [
        "theirs",
        "",
    ]
    # An SMS still in the outbox carries no words: the relay fails such a step.
    assert [i.text for i in await sealed.ding.claim_outbox(now=SMS_AT, limit=5)] == ["", ""]
    with pytest.raises(KeysDestroyed):
        await sealed.ding.create(new_ding(1, "after deletion", cmid="d9"))


async def test_a3_d4_pending_ding_effects_carry_opened_texts_and_erased_ones_empty(
    stores: Stores, sealed: Stores
) -> None:
    """Issue #4: the outbox relay copies a DING's opened text; once the sender's key is
    destroyed (A1) it reads "" and is not copied."""
    mine = msgspec.structs.replace(new_ding(1, "mine"), effects=("org_copy:7",))
    theirs = msgspec.structs.replace(new_ding(2, "theirs"), effects=("org_copy:7",))
    await sealed.ding.create(mine)
    await sealed.ding.create(theirs)
    raw = await stores.ding.pending_effects(after=0, limit=5)
    assert [e.ding.text for e in raw if e.ding is not None] == ["", ""]  # sealed at rest
    opened = await sealed.ding.pending_effects(after=0, limit=5)
    assert [(e.ding.text, e.ding.sealed) for e in opened if e.ding is not None] == [
        ("mine", None),
        ("theirs", None),
    ]
    await sealed.keys.destroy("user:1", now=NOW)
    erased = await sealed.ding.pending_effects(after=0, limit=5)
    assert [e.ding.text for e in erased if e.ding is not None] == ["", "theirs"]


async def test_a3_ding_text_under_an_organisations_key(stores: Stores, sealed: Stores) -> None:
    """How an organisation's own DINGs are sealed (D2, O4): its key, not the sender's."""
    keys = data_keys(sealed)
    org_dings = SealedDingStore(stores.ding, keys, ding_organisation_key(7))
    created = (await org_dings.create(new_ding())).ding
    assert created.text == DING_TEXT
    assert (await stores.keys.load("org:7")).keys
    assert not (await stores.keys.load("user:1")).keys
    got = await org_dings.get(created.ding_id)
    assert got is not None and got.text == DING_TEXT
    # Bound to its key owner: read as a sender-keyed DING it does not open.
    moved = await sealed.ding.get(created.ding_id)
    assert moved is not None and moved.text == ""
    await sealed.keys.destroy("org:7", now=NOW)
    erased = await org_dings.get(created.ding_id)
    assert erased is not None and erased.text == ""


async def test_a3_a_ding_stored_in_plain_reads_as_erased(stores: Stores, sealed: Stores) -> None:
    plain = (await stores.ding.create(new_ding())).ding
    got = await sealed.ding.get(plain.ding_id)
    assert got is not None and got.text == ""


async def test_a3_the_sqlite_ding_row_holds_no_plaintext(tmp_path: Path) -> None:
    from storage.sqlite import open_sqlite_stores

    root = tmp_path / "data"
    async with open_sqlite_stores(root) as raw:
        sealed = seal_stores(raw, MasterKey.generate())
        created = (await sealed.ding.create(new_ding())).ding
        await hand_over(sealed.ding, sms_steps(created), now=SMS_AT, charges=sms_charges(1))
        assert [i.text for i in await sealed.ding.claim_outbox(now=SMS_AT, limit=5)] == [
            DING_TEXT,
            DING_TEXT,
        ]
        with sqlite3.connect(root / "cross.db") as conn:
            rows = conn.execute("SELECT text, sealed, fingerprint FROM dings").fetchall()
        ((text, stored, fingerprint),) = rows
        assert text == "" and isinstance(stored, bytes) and parse(stored) is not None
        assert DING_TEXT.encode() not in stored
        assert fingerprint != b"fp-d1"  # keyed with the master key
        got = await sealed.ding.get(created.ding_id)
        assert got is not None and got.text == DING_TEXT
    for path in root.glob("cross.db*"):  # the database and what is left of its WAL
        assert DING_TEXT.encode() not in path.read_bytes(), path


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
    "Ding",
    "NewDing",
    "DingCreated",
    "StepChange",
    "HandOver",
    "OutboxItem",
    "PendingDingEffect",
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
        (ding.DingStore, SealedDingStore),
    ],
)
def test_a3_every_method_with_a_body_is_sealed_or_opened(protocol: type, wrapper: type) -> None:
    """A method added to a store interface that takes or returns a body must be overridden
    by its sealing wrapper (or sealed bodies would reach the server, or plaintext the disk).
    """
    for name, method in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = get_type_hints(
            method,
            vars(interfaces) | vars(orgs) | vars(moderation) | vars(ding) | vars(group_capacity),
        )
        if any(_mentions_body(hint) for hint in hints.values()):
            assert name in vars(wrapper), f"{wrapper.__name__} must override {name}"
            ours = inspect.signature(vars(wrapper)[name])
            assert list(ours.parameters) == list(inspect.signature(method).parameters), name


async def test_a3_o4_the_org_ding_store_seals_each_ding_with_its_organisations_key(
    stores: Stores, sealed: Stores
) -> None:
    """D2: ``seal_stores`` seals the organisation DING store with the key of the
    organisation that pays (and so owns) each DING: destroying it (O4) erases its DINGs
    and no other organisation's."""
    mine = msgspec.structs.replace(new_ding(cmid="m"), payer="org:7/user:1")
    theirs = msgspec.structs.replace(new_ding(cmid="t"), payer="org:8/user:1")
    first = (await sealed.org_ding.create(mine)).ding
    second = (await sealed.org_ding.create(theirs)).ding
    assert first.domain == "org" and first.text == DING_TEXT
    raw = await stores.org_ding.get(first.ding_id)
    assert raw is not None and raw.text == "" and raw.sealed is not None
    await sealed.keys.destroy("org:7", now=NOW)
    gone, kept = await sealed.org_ding.get(first.ding_id), await sealed.org_ding.get(second.ding_id)
    assert gone is not None and gone.text == ""
    assert kept is not None and kept.text == DING_TEXT
