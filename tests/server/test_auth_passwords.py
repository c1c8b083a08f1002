"""Memory-hard password hashing (A2)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from server.auth.passwords import hash_password, needs_rehash, verify_password

# Cheap parameters keep the suite fast; one test below uses the production defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def test_a2_hash_and_verify_with_the_default_argon2id() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "correct horse battery stapl")
    assert not needs_rehash(stored)


def test_a2_mismatch_returns_false_never_raises() -> None:
    stored = hash_password("s3cret", hasher=FAST)
    assert verify_password(stored, "s3cret", hasher=FAST)
    assert verify_password(stored, "wrong", hasher=FAST) is False
    assert verify_password(stored, "", hasher=FAST) is False


@pytest.mark.parametrize("stored", ["", "plaintext", "$argon2id$v=19$garbage", "$2b$12$abc"])
def test_a2_a_stored_value_that_is_not_an_argon2_hash_never_verifies(stored: str) -> None:
    assert verify_password(stored, "plaintext", hasher=FAST) is False
    assert needs_rehash(stored, hasher=FAST)


def test_a2_hashes_are_salted() -> None:
    assert hash_password("same", hasher=FAST) != hash_password("same", hasher=FAST)


def test_needs_rehash_when_the_parameters_change() -> None:
    weak = hash_password("s3cret", hasher=FAST)
    assert not needs_rehash(weak, hasher=FAST)
    assert needs_rehash(weak)  # the default parameters are stronger
    assert verify_password(weak, "s3cret")  # still verifies: re-hash after this login
