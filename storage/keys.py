"""A3: the key store. Each owner's data keys, kept *wrapped* by the master key, in the
owner's own domain database: a user's in ``personal.db`` (D1), an organisation's in
``organisations.db`` (D2). Nothing here is ever stored unwrapped.

Owners are named ``user:<id>`` and ``org:<id>`` (``user_owner``, ``org_owner``). An owner's
key ids run 1, 2, 3...; the newest is the active one, which seals new bodies; the older ones
are kept to open what they sealed.

Contracts, for every implementation (``tests/storage/test_keys_conformance.py``):

* each method is one transaction in one database (the owner's), durable before it returns;
* ``destroy`` deletes the owner's wrapped keys for good and records that it did, so no key is
  ever added for that owner again; with SQLite's ``secure_delete`` (set for every
  connection) the bytes are overwritten in the file, and the write-ahead log is checkpointed
  and truncated so no copy of them is left in it;
* a use reservation never lets a key's reserved uses pass the limit given, and succeeds only
  on the owner's newest key, so a process holding an older ring learns of a rotation made
  elsewhere at its next reservation.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from storage.errors import StoreError

OwnerKind = Literal["user", "org"]
OWNER_KINDS: tuple[OwnerKind, ...] = ("user", "org")


def user_owner(user_id: int) -> str:
    return f"user:{user_id}"


def org_owner(org_id: int) -> str:
    return f"org:{org_id}"


def owner_kind(owner: str) -> OwnerKind:
    """``user`` or ``org``; ``ValueError`` for any other name."""
    kind, _, number = owner.partition(":")
    if kind not in OWNER_KINDS or not number.isdigit() or str(int(number)) != number:
        raise ValueError(f"not a key owner: {owner!r}")
    return "user" if kind == "user" else "org"


class KeysDestroyed(StoreError):
    """The owner's keys were destroyed (account deleted, organisation dissolved): nothing
    can be sealed for it any more."""


class WrappedKey(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    key_id: int
    #: The data key wrapped by the master key (``storage.crypto.MasterKey.wrap``).
    wrapped: bytes
    #: Which master key wrapped it (``MasterKey.key_id``, a public fingerprint).
    master_id: str
    created_at: int
    #: Uses handed out so far (in leases; a lease lost in a crash stays counted).
    reserved: int


class OwnerKeys(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    #: Ascending by key id; empty for a new owner and for a destroyed one.
    keys: tuple[WrappedKey, ...] = ()
    #: When the keys were destroyed; None while they live.
    destroyed_at: int | None = None


class KeyStore(Protocol):
    async def load(self, owner: str) -> OwnerKeys:
        """The owner's wrapped keys and whether they were destroyed."""

    async def add_key(
        self, owner: str, *, key_id: int, wrapped: bytes, master_id: str, reserved: int, now: int
    ) -> WrappedKey:
        """Add the owner's next key (``key_id`` must be one more than the newest, or 1) with
        ``reserved`` uses already taken. ``AlreadyExists`` if that id is taken or out of
        turn (another process rotated first: load again); ``KeysDestroyed`` if the owner's
        keys were destroyed."""

    async def reserve(
        self, owner: str, key_id: int, *, count: int, limit: int
    ) -> tuple[int, int] | None:
        """Take up to ``count`` more uses of ``key_id``, never past ``limit``; returns the
        lease taken, (start, end): uses ``start`` to ``end - 1``. None if the key is not the
        owner's newest, is used up, or does not exist."""

    async def destroy(self, owner: str, *, now: int) -> int:
        """Delete every wrapped key of the owner and record the destruction (idempotent);
        returns how many keys went."""

    async def scan(self, kind: OwnerKind, *, after: str, limit: int) -> list[OwnerKeys]:
        """Owners of ``kind`` with name greater than ``after`` (destroyed ones included), in
        ascending name order, at most ``limit``."""

    async def rewrap(
        self, owner: str, key_id: int, *, expect_master: str, wrapped: bytes, master_id: str
    ) -> bool:
        """Compare-and-set: replace the wrapped form of a key only if it is still wrapped by
        ``expect_master``. False otherwise (already rewrapped, or gone)."""

    async def master_ids(self) -> dict[str, int]:
        """How many keys each master key wrapped, over every database of the store."""
