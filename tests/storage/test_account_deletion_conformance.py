"""Conformance: personal account deletion (A1), every backend."""

from __future__ import annotations

from storage.records import ContactRow, ContactWrite, NewConversation, NewEntry
from storage.stores import Stores

NOW = 1_000_000


async def test_a1_begin_deletion_ends_sessions_and_frees_the_phone(stores: Stores) -> None:
    personal = stores.personal
    user = await personal.create_user(phone="+15550000001", display_name="Ann", now=NOW)
    deleted = await personal.begin_deletion(user.user_id, now=NOW + 1)
    assert deleted.deleted and deleted.display_name == ""
    assert deleted.token_generation == user.token_generation + 1
    assert await personal.get_user_by_phone("+15550000001") is None
    again = await personal.create_user(phone="+15550000001", display_name="New", now=NOW + 2)
    assert again.user_id != user.user_id  # the number may register a new account
    assert (await personal.begin_deletion(user.user_id, now=NOW + 3)) == deleted  # idempotent
    assert await personal.pending_deletions() == [user.user_id]


async def test_a1_erasing_personal_data_removes_devices_contacts_settings_and_stream(
    stores: Stores,
) -> None:
    personal = stores.personal
    ann = await personal.create_user(phone="+15550000002", display_name="Ann", now=NOW)
    bob = await personal.create_user(phone="+15550000003", display_name="Bob", now=NOW)
    await personal.register_device(user_id=ann.user_id, name="phone", now=NOW)
    await personal.write_contacts(
        [
            ContactWrite(
                row=ContactRow(owner=ann.user_id, peer=bob.user_id, state="accepted"),
                event_body=b"a",
            ),
            ContactWrite(
                row=ContactRow(owner=bob.user_id, peer=ann.user_id, state="accepted"),
                event_body=b"b",
            ),
        ],
        now=NOW,
    )
    await personal.write_settings(ann.user_id, notifications=False, event_body=b"s", now=NOW)
    await stores.consent.set_consent(user_id=ann.user_id, org_id=1, granted=True, now=NOW)
    await personal.begin_deletion(ann.user_id, now=NOW + 1)
    await personal.erase_personal_data(ann.user_id)
    await stores.consent.erase_user(ann.user_id)
    assert await personal.list_devices(ann.user_id) == []
    assert await personal.list_contacts(ann.user_id) == []
    assert await personal.list_contacts(bob.user_id) == []  # both sides
    assert (await personal.get_settings(ann.user_id)).notifications is True  # defaults again
    assert await personal.personal_changes(ann.user_id, after=0, limit=10) == []
    assert await stores.consent.consent_history(ann.user_id, 1) == []
    assert await personal.pending_deletions() == []
    assert len(await personal.personal_changes(bob.user_id, after=0, limit=10)) == 1


async def test_a1_erase_sender_tombstones_only_that_users_messages_in_chunks(
    stores: Stores,
) -> None:
    cross = stores.cross
    create = NewConversation(
        conv_id="g:1",
        kind="group",
        title="t",
        owner_id=1,
        member_limit=10,
        members=((1, "owner"), (2, "member")),
    )
    await cross.append(
        NewEntry(conv_id="g:1", kind="system", sender=1, ts=NOW, body=b"c", create=create)
    )
    for i in range(5):
        for sender in (1, 2):
            await cross.append(
                NewEntry(
                    conv_id="g:1",
                    kind="message",
                    sender=sender,
                    ts=NOW,
                    body=f"{sender}-{i}".encode(),
                    require_member=sender,
                )
            )
    first = await cross.erase_sender(2, now=NOW + 1, limit=3)
    rest = await cross.erase_sender(2, now=NOW + 1, limit=3)
    assert (len(first), len(rest)) == (3, 2)
    assert await cross.erase_sender(2, now=NOW + 1, limit=3) == []
    assert all(r.kind == "recall" and r.sender == 2 for r in first + rest)
    history = await cross.history("g:1", visible_from=1, visible_to=None, before_seq=None, limit=50)
    for entry in history:
        if entry.kind == "message" and entry.sender == 2:
            assert entry.recalled and entry.body is None
        elif entry.kind == "message":
            assert not entry.recalled and entry.body is not None
    assert [e.seq for e in history] == list(range(1, 12))  # seqs stay


async def test_p6_dormant_users_are_those_not_seen_for_the_period(stores: Stores) -> None:
    personal = stores.personal
    year = 365 * 24 * 3600 * 1000
    old = await personal.create_user(phone="+15550000010", display_name="Old", now=NOW)
    active = await personal.create_user(phone="+15550000011", display_name="Active", now=NOW)
    never = await personal.create_user(phone="+15550000012", display_name="Never", now=NOW)
    gone = await personal.create_user(phone="+15550000013", display_name="Gone", now=NOW)
    device = await personal.register_device(user_id=old.user_id, name="p", now=NOW)
    await personal.touch_device(device.device_id, now=NOW + 10)
    recent = await personal.register_device(user_id=active.user_id, name="p", now=NOW)
    await personal.touch_device(recent.device_id, now=NOW + 2 * year)
    await personal.begin_deletion(gone.user_id, now=NOW)
    cutoff = NOW + 2 * year - year
    found = await personal.dormant_users(seen_before=cutoff, after_user=0, limit=10)
    assert [(u.user_id, seen) for u, seen in found] == [
        (old.user_id, NOW + 10),
        (never.user_id, NOW),
    ]
    page = await personal.dormant_users(seen_before=cutoff, after_user=old.user_id, limit=1)
    assert [u.user_id for u, _ in page] == [never.user_id]
