"""Password hashing for enterprise accounts (A2): Argon2id, memory-hard, via argon2-cffi.

The stored form is the PHC string (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``), which
carries its own salt and parameters, so raising the cost later only needs ``needs_rehash``
and a re-hash at the next successful login. Passwords and hashes never appear in a log.

Hashing is deliberately slow (tens of milliseconds and 64 MiB with the default RFC 9106
low-memory profile) and blocking: call these through ``trio.to_thread.run_sync`` from the
event loop.
"""

from __future__ import annotations

from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: argon2-cffi's defaults: Argon2id, RFC 9106 low-memory profile.
DEFAULT_HASHER: Final = PasswordHasher()


def hash_password(password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """A salted Argon2id hash of ``password`` in PHC string form."""
    return hasher.hash(password)


def verify_password(
    stored_hash: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """True if ``password`` matches ``stored_hash``; False on a mismatch, never an exception.

    *Decision:* a stored value that is not an Argon2 hash at all (``InvalidHashError``)
    also returns False, so a corrupt or foreign row can never be logged into.
    """
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True if ``stored_hash`` was made with other parameters than ``hasher``'s: re-hash
    the password after the next successful ``verify_password``."""
    try:
        return hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
