"""A3: the sealed-body envelope, data keys, key rings and key wrapping (``storage.crypto``)."""

from __future__ import annotations

import pytest

from storage.crypto import (
    HEADER_BYTES,
    KEY_BYTES,
    KEY_USE_LIMIT,
    MIN_SEALED_BYTES,
    NONCE_BYTES,
    VERSION,
    DataKey,
    KeyExhausted,
    KeyRing,
    MasterKey,
    NoActiveKey,
    WrongMasterKey,
    associated_data,
    parse,
)

AD = associated_data("test", "conv-1", 7, 1_000, "cmid-1")


def ring(owner: str = "user:7", *key_ids: int, lease: int = 1_000) -> KeyRing:
    return KeyRing(
        owner,
        [
            DataKey(key_id, DataKey.generate_secret(), uses=0, lease_end=lease)
            for key_id in key_ids or (1,)
        ],
    )


def test_a3_seal_and_open_round_trip() -> None:
    keys = ring()
    body = keys.seal(b"hello, world", AD)
    sealed = parse(body)
    assert sealed is not None
    assert (sealed.version, sealed.key_id, len(sealed.nonce)) == (VERSION, 1, NONCE_BYTES)
    assert b"hello" not in body
    assert keys.open(sealed, AD) == b"hello, world"
    assert len(body) == MIN_SEALED_BYTES + len(b"hello, world")
    empty = keys.seal(b"", AD)
    assert keys.open(parse(empty), AD) == b""  # type: ignore[arg-type]


@pytest.mark.parametrize("where", [0, HEADER_BYTES, HEADER_BYTES + NONCE_BYTES, -1])
def test_a3_a_tampered_envelope_does_not_open(where: int) -> None:
    keys = ring()
    body = bytearray(keys.seal(b"secret words", AD))
    body[where] ^= 0x01
    sealed = parse(bytes(body))
    # A flipped version byte is not an envelope at all; any other flip fails the tag.
    assert sealed is None or keys.open(sealed, AD) is None


def test_a3_a_changed_key_id_does_not_open_even_with_that_key_held() -> None:
    keys = ring("user:7", 1, 2)
    body = bytearray(keys.seal(b"words", AD))  # sealed with key 2, the active one
    body[1:HEADER_BYTES] = (1).to_bytes(4, "big")
    assert keys.open(parse(bytes(body)), AD) is None  # type: ignore[arg-type]


def test_a3_wrong_associated_data_does_not_open() -> None:
    keys = ring()
    sealed = parse(keys.seal(b"words", AD))
    assert sealed is not None
    for other in (
        associated_data("test", "conv-2", 7, 1_000, "cmid-1"),  # another conversation
        associated_data("test", "conv-1", 8, 1_000, "cmid-1"),  # another sender
        associated_data("test", "conv-1", 7, 1_001, "cmid-1"),  # another time
        associated_data("test", "conv-1", 7, 1_000, None),  # another row
        associated_data("other", "conv-1", 7, 1_000, "cmid-1"),  # another purpose
    ):
        assert keys.open(sealed, other) is None
    assert keys.open(sealed, AD) == b"words"


def test_a3_a_body_moved_to_another_owner_does_not_open() -> None:
    secret = DataKey.generate_secret()
    alice = KeyRing("user:1", [DataKey(1, secret, lease_end=10)])
    bob = KeyRing("user:2", [DataKey(1, secret, lease_end=10)])  # even with the same bytes
    sealed = parse(alice.seal(b"words", AD))
    assert sealed is not None
    assert bob.open(sealed, AD) is None
    assert alice.open(sealed, AD) == b"words"


def test_a3_the_wrong_key_does_not_open() -> None:
    sealed = parse(ring().seal(b"words", AD))
    assert sealed is not None
    assert ring().open(sealed, AD) is None  # same owner and id, other key bytes


def test_a3_an_unknown_key_id_reads_as_erased() -> None:
    keys = ring("user:7", 1, 2)
    sealed = parse(keys.seal(b"words", AD))
    assert sealed is not None and sealed.key_id == 2
    older = KeyRing("user:7", [keys.keys[1]])
    assert older.open(sealed, AD) is None
    assert KeyRing("user:7", destroyed=True).open(sealed, AD) is None


def test_a3_the_ring_seals_with_its_newest_key_and_opens_with_any() -> None:
    keys = ring("user:7", 1)
    first = keys.seal(b"one", AD)
    keys.add(DataKey(2, DataKey.generate_secret(), lease_end=10))
    second = keys.seal(b"two", AD)
    assert (parse(first).key_id, parse(second).key_id) == (1, 2)  # type: ignore[union-attr]
    assert keys.open(parse(first), AD) == b"one"  # type: ignore[arg-type]
    assert keys.open(parse(second), AD) == b"two"  # type: ignore[arg-type]


def test_a3_a_key_stops_at_the_end_of_its_lease() -> None:
    key = DataKey(1, DataKey.generate_secret(), uses=0, lease_end=3)
    for _ in range(3):
        key.seal(b"x", AD)
    assert key.remaining == 0
    with pytest.raises(KeyExhausted):
        key.seal(b"x", AD)
    key.extend(3, 5)
    key.seal(b"x", AD)
    assert (key.uses, key.remaining) == (4, 1)
    with pytest.raises(NoActiveKey):
        KeyRing("user:1").seal(b"x", AD)


def test_a3_the_use_limit_is_below_2_to_the_32() -> None:
    assert KEY_USE_LIMIT < 2**32


def test_a3_nonces_are_unique_over_many_seals() -> None:
    keys = ring(lease=20_000)
    nonces = {parse(keys.seal(b"x", AD)).nonce for _ in range(20_000)}  # type: ignore[union-attr]
    assert len(nonces) == 20_000


def test_a3_parse_refuses_what_is_not_an_envelope() -> None:
    keys = ring()
    body = keys.seal(b"words", AD)
    assert parse(body[: MIN_SEALED_BYTES - 1]) is None
    assert parse(b"\x82\xa4kind\xa4text\xa4text\xa2hi") is None  # a plain MessagePack body
    assert parse(bytes([VERSION + 1]) + body[1:]) is None
    assert parse(b"") is None


def test_a3_associated_data_is_unambiguous() -> None:
    assert associated_data("p", "ab", "c") != associated_data("p", "a", "bc")
    assert associated_data("p", None) != associated_data("p", "")
    assert associated_data("p", 12) == associated_data("p", "12")
    assert associated_data("p", 1) != associated_data("q", 1)


def test_a3_wrapped_keys_open_only_with_their_master_owner_and_id() -> None:
    master = MasterKey.generate()
    secret = DataKey.generate_secret()
    wrapped = master.wrap("user:7", 1, secret)
    assert secret not in wrapped
    assert master.unwrap("user:7", 1, wrapped) == secret
    for owner, key_id in (("user:8", 1), ("org:7", 1), ("user:7", 2)):
        with pytest.raises(WrongMasterKey):
            master.unwrap(owner, key_id, wrapped)
    with pytest.raises(WrongMasterKey):
        MasterKey.generate().unwrap("user:7", 1, wrapped)
    with pytest.raises(WrongMasterKey):
        master.unwrap("user:7", 1, wrapped[:-1])


def test_a3_master_key_ids_are_stable_fingerprints_and_secrets_stay_out_of_reprs() -> None:
    raw = bytes(range(KEY_BYTES))
    master = MasterKey(raw)
    assert master.key_id == MasterKey(raw).key_id != MasterKey.generate().key_id
    assert len(master.key_id) == 16 and raw.hex() not in master.key_id
    assert raw.hex() not in repr(master) and "key_id" in repr(master)
    key = DataKey(1, raw, lease_end=1)
    assert raw.hex() not in repr(key) and str(list(raw)) not in repr(key)
    assert master.derive("a") != master.derive("b")
    with pytest.raises(ValueError):
        MasterKey(b"short")
    with pytest.raises(ValueError):
        DataKey(0, raw)
