"""Conformance of every ``PersonalStore`` backend (D1) to ``storage/interfaces.py``.

Only the ``stores`` fixture and the public interface are used, so each test runs on every
backend. Times are fixed integers, never the real clock.
"""

from __future__ import annotations

import pytest

from storage.errors import AlreadyExists, IdempotencyConflict
from storage.interfaces import PersonalStore
from storage.records import (
    ContactRow,
    ContactStateName,
    ContactWrite,
    IdempotencyKey,
    RefreshSession,
    Settings,
    User,
)
from storage.stores import Stores

NOW = 1_000_000
CODE_TTL = 300_000
MAX_ATTEMPTS = 3


async def make_user(personal: PersonalStore, phone: str = "+8613800000001") -> User:
    return await personal.create_user(phone=phone, display_name="Li Wei", now=NOW)


def session(session_id: str = "s1", *, user_id: int = 1, mac: bytes = b"mac-1") -> RefreshSession:
    return RefreshSession(
        session_id=session_id,
        user_id=user_id,
        device_id=1,
        secret_mac=mac,
        generation=0,
        expires_at=NOW + 1_000,
    )


def contact(
    owner: int, peer: int, state: ContactStateName | None, body: bytes = b"event"
) -> ContactWrite:
    return ContactWrite(row=ContactRow(owner=owner, peer=peer, state=state), event_body=body)


def key(client_id: str, fingerprint: bytes = b"fp-1", sender: int = 1) -> IdempotencyKey:
    return IdempotencyKey(sender=sender, client_id=client_id, fingerprint=fingerprint)


# --- users -----------------------------------------------------------------------------------


async def test_create_user_gives_increasing_ids_from_1(stores: Stores) -> None:
    first = await stores.personal.create_user(phone="+861", display_name="A", now=NOW)
    second = await stores.personal.create_user(phone="+862", display_name="B", now=NOW + 1)

    assert (first.user_id, second.user_id) == (1, 2)
    assert first == User(user_id=1, phone="+861", display_name="A", created_at=NOW)
    assert (second.token_generation, second.suspended) == (0, False)
    assert await stores.personal.get_user(2) == second
    assert await stores.personal.get_user_by_phone("+861") == first


async def test_create_user_with_a_taken_phone_raises_already_exists_and_stores_nothing(
    stores: Stores,
) -> None:
    first = await make_user(stores.personal, phone="+861")

    with pytest.raises(AlreadyExists):
        await stores.personal.create_user(phone="+861", display_name="Other", now=NOW)

    assert await stores.personal.get_user_by_phone("+861") == first
    assert await stores.personal.get_user(2) is None
    second = await make_user(stores.personal, phone="+862")
    assert second.user_id == 2


async def test_get_user_and_get_user_by_phone_return_none_when_missing(stores: Stores) -> None:
    assert await stores.personal.get_user(1) is None
    assert await stores.personal.get_user_by_phone("+860") is None


async def test_get_users_returns_existing_users_in_ascending_id_order(stores: Stores) -> None:
    for n in range(1, 5):
        await make_user(stores.personal, phone=f"+86{n}")

    users = await stores.personal.get_users([4, 99, 1, 3, 1])

    assert [u.user_id for u in users] == [1, 3, 4]
    assert await stores.personal.get_users([]) == []


async def test_set_display_name_changes_only_the_name(stores: Stores) -> None:
    user = await make_user(stores.personal)

    await stores.personal.set_display_name(user.user_id, "Wang Fang")

    assert await stores.personal.get_user(user.user_id) == User(
        user_id=user.user_id, phone=user.phone, display_name="Wang Fang", created_at=NOW
    )


async def test_bump_token_generation_increments_and_deletes_the_users_refresh_sessions(
    stores: Stores,
) -> None:
    """A2: logout_all invalidates every token and refresh session of the user."""
    alice = await make_user(stores.personal, phone="+861")
    bob = await make_user(stores.personal, phone="+862")
    await stores.personal.put_refresh_session(session("a1", user_id=alice.user_id))
    await stores.personal.put_refresh_session(session("a2", user_id=alice.user_id))
    await stores.personal.put_refresh_session(session("b1", user_id=bob.user_id))

    assert await stores.personal.bump_token_generation(alice.user_id) == 1
    assert await stores.personal.bump_token_generation(alice.user_id) == 2

    stored = await stores.personal.get_user(alice.user_id)
    assert stored is not None and stored.token_generation == 2
    assert await stores.personal.get_refresh_session("a1") is None
    assert await stores.personal.get_refresh_session("a2") is None
    assert await stores.personal.get_refresh_session("b1") is not None
    other = await stores.personal.get_user(bob.user_id)
    assert other is not None and other.token_generation == 0


# --- devices ---------------------------------------------------------------------------------


async def test_register_device_gives_increasing_ids_and_lists_them_per_user(
    stores: Stores,
) -> None:
    phone = await stores.personal.register_device(user_id=1, name="phone", now=NOW)
    other = await stores.personal.register_device(user_id=2, name="laptop", now=NOW + 1)
    tablet = await stores.personal.register_device(user_id=1, name="tablet", now=NOW + 2)

    assert (phone.device_id, other.device_id, tablet.device_id) == (1, 2, 3)
    assert (phone.user_id, phone.name, phone.created_at, phone.last_seen_at) == (
        1,
        "phone",
        NOW,
        NOW,
    )
    assert (phone.acked_conversations, phone.acked_personal) == (0, 0)
    assert await stores.personal.list_devices(1) == [phone, tablet]
    assert await stores.personal.get_device(2) == other
    assert await stores.personal.get_device(9) is None
    assert await stores.personal.list_devices(9) == []


async def test_p6_touch_devices_records_a_batch_and_never_moves_a_time_back(
    stores: Stores,
) -> None:
    phone = await stores.personal.register_device(user_id=1, name="phone", now=NOW)
    tablet = await stores.personal.register_device(user_id=1, name="tablet", now=NOW)
    await stores.personal.touch_device(tablet.device_id, now=NOW + 900)

    await stores.personal.touch_devices(
        [(phone.device_id, NOW + 500), (tablet.device_id, NOW + 700), (999_999, NOW + 1)]
    )

    seen = {d.device_id: d.last_seen_at for d in await stores.personal.list_devices(1)}
    assert seen == {phone.device_id: NOW + 500, tablet.device_id: NOW + 900}
    await stores.personal.touch_devices([])  # nothing to write is fine


async def test_touch_device_records_when_it_was_last_seen(stores: Stores) -> None:
    device = await stores.personal.register_device(user_id=1, name="phone", now=NOW)

    await stores.personal.touch_device(device.device_id, now=NOW + 500)

    touched = await stores.personal.get_device(device.device_id)
    assert touched is not None
    assert (touched.created_at, touched.last_seen_at) == (NOW, NOW + 500)


async def test_ack_device_positions_never_move_backwards(stores: Stores) -> None:
    device = await stores.personal.register_device(user_id=1, name="phone", now=NOW)

    await stores.personal.ack_device(device.device_id, conversations=10, personal=4, organisation=3)
    await stores.personal.ack_device(device.device_id, conversations=7, personal=9, organisation=1)
    await stores.personal.ack_device(device.device_id, conversations=12, personal=2)

    acked = await stores.personal.get_device(device.device_id)
    assert acked is not None
    assert (acked.acked_conversations, acked.acked_personal, acked.acked_organisation) == (12, 9, 3)


# --- refresh sessions ------------------------------------------------------------------------


async def test_put_refresh_session_inserts_and_replaces(stores: Stores) -> None:
    await stores.personal.put_refresh_session(session("s1", mac=b"old"))
    replacement = session("s1", mac=b"new")

    await stores.personal.put_refresh_session(replacement)

    assert await stores.personal.get_refresh_session("s1") == replacement
    assert await stores.personal.get_refresh_session("s2") is None


async def test_rotate_refresh_session_replaces_the_mac_only_when_the_old_one_matches(
    stores: Stores,
) -> None:
    await stores.personal.put_refresh_session(session("s1", mac=b"mac-1"))

    rotated = await stores.personal.rotate_refresh_session(
        "s1", old_mac=b"mac-1", new_mac=b"mac-2", expires_at=NOW + 9_000
    )
    # A2: the old refresh token used again is a reuse and must not rotate.
    reused = await stores.personal.rotate_refresh_session(
        "s1", old_mac=b"mac-1", new_mac=b"mac-3", expires_at=NOW + 10_000
    )

    assert rotated and not reused
    stored = await stores.personal.get_refresh_session("s1")
    assert stored is not None
    assert (stored.secret_mac, stored.expires_at) == (b"mac-2", NOW + 9_000)
    assert (stored.user_id, stored.device_id, stored.generation) == (1, 1, 0)


async def test_rotate_refresh_session_that_is_gone_returns_false(stores: Stores) -> None:
    await stores.personal.put_refresh_session(session("s1", mac=b"mac-1"))
    await stores.personal.delete_refresh_session("s1")

    assert await stores.personal.get_refresh_session("s1") is None
    assert not await stores.personal.rotate_refresh_session(
        "s1", old_mac=b"mac-1", new_mac=b"mac-2", expires_at=NOW
    )
    assert await stores.personal.get_refresh_session("s1") is None
    await stores.personal.delete_refresh_session("never-existed")


# --- one-time login codes (A2) ---------------------------------------------------------------


async def consume(personal: PersonalStore, mac: bytes, *, now: int = NOW) -> str:
    return await personal.consume_login_code(
        phone="+861", mac=mac, now=now, max_attempts=MAX_ATTEMPTS
    )


async def test_login_code_without_a_stored_code_is_missing(stores: Stores) -> None:
    assert await consume(stores.personal, b"code") == "missing"


async def test_login_code_is_single_use(stores: Stores) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"code", expires_at=NOW + CODE_TTL)

    assert await consume(stores.personal, b"code") == "ok"
    assert await consume(stores.personal, b"code") == "missing"


async def test_expired_login_code_is_reported_once_and_deleted(stores: Stores) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"code", expires_at=NOW + CODE_TTL)

    assert await consume(stores.personal, b"code", now=NOW + CODE_TTL) == "expired"
    assert await consume(stores.personal, b"code", now=NOW) == "missing"


async def test_wrong_login_codes_count_until_exhausted_even_for_the_right_code(
    stores: Stores,
) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"code", expires_at=NOW + CODE_TTL)

    outcomes = [await consume(stores.personal, b"guess") for _ in range(MAX_ATTEMPTS)]

    assert outcomes == ["wrong", "wrong", "exhausted"]
    assert await consume(stores.personal, b"code") == "exhausted"
    assert await consume(stores.personal, b"guess") == "exhausted"


async def test_right_login_code_after_wrong_tries_below_the_limit_is_ok(stores: Stores) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"code", expires_at=NOW + CODE_TTL)

    assert await consume(stores.personal, b"guess") == "wrong"
    assert await consume(stores.personal, b"guess") == "wrong"
    assert await consume(stores.personal, b"code") == "ok"


async def test_put_login_code_replaces_the_earlier_code_and_resets_attempts(
    stores: Stores,
) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"first", expires_at=NOW + CODE_TTL)
    for _ in range(MAX_ATTEMPTS):
        await consume(stores.personal, b"guess")

    await stores.personal.put_login_code(phone="+861", mac=b"second", expires_at=NOW + CODE_TTL)

    assert await consume(stores.personal, b"first") == "wrong"
    assert await consume(stores.personal, b"guess") == "wrong"
    assert await consume(stores.personal, b"second") == "ok"


async def test_login_codes_are_kept_per_phone(stores: Stores) -> None:
    await stores.personal.put_login_code(phone="+861", mac=b"one", expires_at=NOW + CODE_TTL)
    await stores.personal.put_login_code(phone="+862", mac=b"two", expires_at=NOW + CODE_TTL)

    assert await consume(stores.personal, b"two") == "wrong"
    assert (
        await stores.personal.consume_login_code(
            phone="+862", mac=b"two", now=NOW, max_attempts=MAX_ATTEMPTS
        )
        == "ok"
    )


# --- QR contact tokens (M5) ------------------------------------------------------------------


async def test_qr_token_resolves_to_its_user_until_it_expires(stores: Stores) -> None:
    await stores.personal.put_qr_token(token_hash=b"h1", user_id=7, expires_at=NOW + 60_000)

    assert await stores.personal.resolve_qr_token(token_hash=b"h1", now=NOW) == 7
    assert await stores.personal.resolve_qr_token(token_hash=b"h1", now=NOW + 59_999) == 7
    assert await stores.personal.resolve_qr_token(token_hash=b"h1", now=NOW + 60_000) is None
    assert await stores.personal.resolve_qr_token(token_hash=b"h2", now=NOW) is None


# --- contacts (M5) ---------------------------------------------------------------------------


async def test_write_contacts_upserts_rows_and_appends_one_change_per_row_owner(
    stores: Stores,
) -> None:
    changes, duplicate = await stores.personal.write_contacts(
        [contact(1, 2, "requested", b"1 asked 2"), contact(2, 1, "pending", b"2 was asked")],
        now=NOW,
    )

    assert not duplicate
    assert [(c.user_id, c.body) for c in changes] == [(1, b"1 asked 2"), (2, b"2 was asked")]
    assert changes[0].pstream < changes[1].pstream
    assert await stores.personal.personal_head() == changes[1].pstream
    assert await stores.personal.get_contact(1, 2) == ContactRow(
        owner=1, peer=2, state="requested", updated_at=NOW
    )
    row = await stores.personal.get_contact(2, 1)
    assert row is not None and row.state == "pending"

    await stores.personal.write_contacts(
        [
            ContactWrite(
                row=ContactRow(owner=1, peer=2, state="accepted", note="Bob"), event_body=b""
            )
        ],
        now=NOW + 5,
    )
    assert await stores.personal.get_contact(1, 2) == ContactRow(
        owner=1, peer=2, state="accepted", note="Bob", updated_at=NOW + 5
    )


async def test_write_contacts_with_state_none_deletes_the_row(stores: Stores) -> None:
    await stores.personal.write_contacts([contact(1, 2, "accepted")], now=NOW)

    changes, _ = await stores.personal.write_contacts([contact(1, 2, None, b"removed")], now=NOW)

    assert await stores.personal.get_contact(1, 2) is None
    assert await stores.personal.list_contacts(1) == []
    assert [c.body for c in changes] == [b"removed"]


async def test_list_contacts_returns_the_owners_rows_in_ascending_peer_order(
    stores: Stores,
) -> None:
    await stores.personal.write_contacts(
        [contact(1, 9, "accepted"), contact(1, 3, "blocked"), contact(2, 1, "accepted")],
        now=NOW,
    )
    await stores.personal.write_contacts([contact(1, 5, "requested")], now=NOW)

    rows = await stores.personal.list_contacts(1)

    assert [(r.peer, r.state) for r in rows] == [(3, "blocked"), (5, "requested"), (9, "accepted")]
    assert {r.owner for r in rows} == {1}


async def test_a1_contacts_naming_are_the_other_users_rows_about_a_peer_by_owner(
    stores: Stores,
) -> None:
    await stores.personal.write_contacts(
        [contact(3, 1, "blocked"), contact(1, 2, "accepted"), contact(2, 1, "accepted")],
        now=NOW,
    )
    await stores.personal.write_contacts([contact(4, 2, "pending")], now=NOW)

    rows = await stores.personal.contacts_naming(1)

    assert [(r.owner, r.peer, r.state) for r in rows] == [(2, 1, "accepted"), (3, 1, "blocked")]
    assert await stores.personal.contacts_naming(9) == []


async def test_accepted_contacts_are_the_peers_in_state_accepted_ascending(
    stores: Stores,
) -> None:
    await stores.personal.write_contacts(
        [contact(1, 9, "accepted"), contact(1, 3, "blocked"), contact(2, 1, "accepted")],
        now=NOW,
    )
    await stores.personal.write_contacts(
        [contact(1, 5, "requested"), contact(1, 4, "accepted")], now=NOW
    )

    assert await stores.personal.accepted_contacts(1) == [4, 9]
    assert await stores.personal.accepted_contacts(2) == [1]
    assert await stores.personal.accepted_contacts(7) == []


async def test_write_contacts_resend_with_same_key_returns_the_same_changes_and_writes_nothing(
    stores: Stores,
) -> None:
    first, first_duplicate = await stores.personal.write_contacts(
        [contact(1, 2, "requested"), contact(2, 1, "pending")], now=NOW, idempotency=key("add-2")
    )
    head = await stores.personal.personal_head()

    again, duplicate = await stores.personal.write_contacts(
        [contact(1, 2, "requested"), contact(2, 1, "pending")],
        now=NOW + 1,
        idempotency=key("add-2"),
    )

    assert (first_duplicate, duplicate) == (False, True)
    assert again == first
    assert await stores.personal.personal_head() == head
    assert await stores.personal.personal_changes(1, after=0, limit=10) == first[:1]
    row = await stores.personal.get_contact(1, 2)
    assert row is not None and row.updated_at == NOW


async def test_write_contacts_same_key_with_other_fingerprint_conflicts_and_writes_nothing(
    stores: Stores,
) -> None:
    await stores.personal.write_contacts(
        [contact(1, 2, "requested")], now=NOW, idempotency=key("add", b"fp-a")
    )
    head = await stores.personal.personal_head()

    with pytest.raises(IdempotencyConflict):
        await stores.personal.write_contacts(
            [contact(1, 3, "requested")], now=NOW, idempotency=key("add", b"fp-b")
        )

    assert await stores.personal.personal_head() == head
    assert await stores.personal.get_contact(1, 3) is None


# --- settings (M3) ---------------------------------------------------------------------------


async def test_settings_are_defaults_until_written(stores: Stores) -> None:
    assert await stores.personal.get_settings(4) == Settings(user_id=4)
    settings = await stores.personal.get_settings(4)
    assert settings.notifications
    assert settings.muted_conversations == frozenset()


async def test_write_settings_changes_only_what_is_given_and_appends_a_change(
    stores: Stores,
) -> None:
    change = await stores.personal.write_settings(
        1, notifications=False, event_body=b"push off", now=NOW
    )
    await stores.personal.write_settings(
        1, mute_conversation=("g:1", True), event_body=b"mute g:1", now=NOW
    )
    await stores.personal.write_settings(
        1, mute_conversation=("d:1:2", True), event_body=b"mute d", now=NOW
    )
    await stores.personal.write_settings(
        1, mute_conversation=("g:1", False), event_body=b"unmute g:1", now=NOW
    )

    assert (change.user_id, change.body) == (1, b"push off")
    assert await stores.personal.get_settings(1) == Settings(
        user_id=1, notifications=False, muted_conversations=frozenset({"d:1:2"})
    )
    assert await stores.personal.get_settings(2) == Settings(user_id=2)
    bodies = [c.body for c in await stores.personal.personal_changes(1, after=0, limit=10)]
    assert bodies == [b"push off", b"mute g:1", b"mute d", b"unmute g:1"]


async def test_unmuting_a_conversation_that_is_not_muted_changes_nothing_but_the_stream(
    stores: Stores,
) -> None:
    change = await stores.personal.write_settings(
        1, mute_conversation=("g:9", False), event_body=b"unmute", now=NOW
    )

    assert await stores.personal.get_settings(1) == Settings(user_id=1)
    assert change.pstream == await stores.personal.personal_head()


# --- the personal stream ---------------------------------------------------------------------


async def test_personal_head_starts_at_zero(stores: Stores) -> None:
    assert await stores.personal.personal_head() == 0
    assert await stores.personal.personal_changes(1, after=0, limit=10) == []


async def test_personal_changes_page_one_users_entries_in_ascending_order(
    stores: Stores,
) -> None:
    written = []
    for n in range(5):
        written.append(
            await stores.personal.write_settings(
                1, notifications=n % 2 == 0, event_body=b"u1-%d" % n, now=NOW
            )
        )
        await stores.personal.write_settings(2, notifications=True, event_body=b"u2", now=NOW)

    first = await stores.personal.personal_changes(1, after=0, limit=2)
    second = await stores.personal.personal_changes(1, after=first[-1].pstream, limit=2)
    third = await stores.personal.personal_changes(1, after=second[-1].pstream, limit=2)

    assert first + second + third == written
    assert len(third) == 1
    assert all(c.user_id == 1 for c in written)
    pstreams = [c.pstream for c in written]
    assert pstreams == sorted(pstreams) and len(set(pstreams)) == 5
    assert await stores.personal.personal_head() == pstreams[-1] + 1  # user 2's last entry
    assert await stores.personal.personal_changes(1, after=pstreams[-1], limit=10) == []


async def test_prune_idempotency_forgets_only_contact_keys_recorded_before_the_cutoff(
    stores: Stores,
) -> None:
    old, _ = await stores.personal.write_contacts(
        [contact(1, 2, "requested")], now=NOW, idempotency=key("old")
    )
    await stores.personal.write_contacts(
        [contact(1, 3, "requested")], now=NOW + 10, idempotency=key("new")
    )

    assert await stores.personal.prune_idempotency(older_than=NOW + 10) == 1
    assert await stores.personal.prune_idempotency(older_than=NOW + 10) == 0

    again, duplicate = await stores.personal.write_contacts(
        [contact(1, 4, "requested")], now=NOW + 20, idempotency=key("old", b"fp-2")
    )
    assert not duplicate and again[0].pstream > old[0].pstream
    with pytest.raises(IdempotencyConflict):
        await stores.personal.write_contacts(
            [contact(1, 5, "requested")], now=NOW + 20, idempotency=key("new", b"fp-2")
        )
