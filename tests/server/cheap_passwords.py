"""A cheap password hasher for the property tests that log enterprise accounts in.

Argon2 at its full cost for every ``login.enterprise`` would make each example slow, and
passwords are not what those tests are about (``tests/server/test_auth_passwords.py`` is).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from argon2 import PasswordHasher

from server.auth import passwords

_hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _hash(password: str) -> str:
    return passwords.hash_password(password, hasher=_hasher)


def _verify(stored: str, password: str) -> bool:
    return passwords.verify_password(stored, password, hasher=_hasher)


@contextmanager
def cheap_passwords() -> Iterator[None]:
    """Enterprise accounts' passwords hashed and checked at the lowest Argon2 cost."""
    with (
        mock.patch("server.services.enterprise.hash_password", _hash),
        mock.patch("server.services.enterprise.verify_password", _verify),
    ):
        yield
