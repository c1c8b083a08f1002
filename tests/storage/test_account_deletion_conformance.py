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
