"""A3, encryption at rest: the sealed-body envelope, data keys, key rings and key wrapping.

Sans-I/O: nothing here touches a file, a database or trio. ``storage.sealing`` loads and
stores keys and applies this module to the stores; ``docs/encryption.md`` is the overview.

The envelope of one sealed body (``Sealed``)::

    version (1 byte) | key id (4 bytes, big endian) | nonce (12 random bytes) | AES-256-GCM
    ciphertext and 16-byte tag

The version byte and key id (the *header*) are authenticated with the associated data, which
names where the body lives (e.g. its conversation, sender, time and client message id): a
sealed body copied to another row, another owner or under another key id fails to open.

Keys:

* a **data key** (``DataKey``) is 32 random bytes with a key id unique within its owner
  (``user:<id>`` or ``org:<id>``); an owner's keys form a ``KeyRing``, which seals with its
  newest (active) key and opens with any key it still holds;
* a data key is stored only **wrapped** (AES-256-GCM under the master key, bound to its owner
  and key id); the **master key** (``MasterKey``) is 32 bytes the operator keeps.

Limits: nonces are random 96-bit values, so one key must not seal more than 2^32 bodies
(NIST SP 800-38D §8.3). ``KEY_USE_LIMIT`` stops a key at half that; uses are reserved in
leases that are counted as spent even if a crash loses them, so the count only errs upward.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The envelope version this code writes (and the only one it reads).
VERSION: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
_HEADER = struct.Struct(">BI")
HEADER_BYTES: Final = _HEADER.size
#: The smallest envelope: header, nonce and tag around an empty plaintext.
MIN_SEALED_BYTES: Final = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
#: Bodies one data key seals at most. Random 96-bit nonces collide with probability about
#: n^2 / 2^97 after n seals; NIST caps n at 2^32 (2^-33). Stopping at 2^31 keeps it below
#: 2^-35 and leaves room for uses reserved but lost in crashes.
KEY_USE_LIMIT: Final = 2**31
#: Largest key id (4 bytes in the envelope).
MAX_KEY_ID: Final = 2**32 - 1

_WRAP_VERSION: Final = 1
_WRAPPED_BYTES: Final = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES


class CryptoError(Exception):
    """Base of this module's errors."""


class KeyExhausted(CryptoError):
    """The active key has no reserved use left: reserve more or rotate (``storage.sealing``
    does both)."""


class NoActiveKey(CryptoError):
    """The ring has no key to seal with (a new owner, or one whose keys were destroyed)."""


class WrongMasterKey(CryptoError):
    """A wrapped key does not open with this master key: the wrong key was configured, or
    the stored wrapped key was damaged. Never treated as erasure."""


def associated_data(purpose: str, *parts: str | int | bytes | None) -> bytes:
    """Unambiguous associated data: the purpose, then each part length-prefixed (None and
    "" differ)."""
    out = bytearray(b"rivet/")
    out += purpose.encode()
    for part in parts:
        if part is None:
            out += b"\xff\xff\xff\xff"
            continue
        if isinstance(part, str):
            data = part.encode()
        elif isinstance(part, int):
            data = str(part).encode()
        else:
            data = part
        out += len(data).to_bytes(4, "big")
        out += data
    return bytes(out)


class Sealed(NamedTuple):
    """A parsed envelope."""

    version: int
    key_id: int
    nonce: bytes
    ciphertext: bytes

    @property
    def header(self) -> bytes:
        return _HEADER.pack(self.version, self.key_id)


def parse(body: bytes) -> Sealed | None:
    """The envelope in ``body``, or None if it is not one this code can read."""
    if len(body) < MIN_SEALED_BYTES or body[0] != VERSION:
        return None
    version, key_id = _HEADER.unpack_from(body)
    nonce = body[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    return Sealed(version, key_id, bytes(nonce), bytes(body[HEADER_BYTES + NONCE_BYTES :]))


class DataKey:
    """One data key: its id, its AES-GCM instance and its use lease.

    ``uses`` counts what this process sealed with it (from the start of its lease);
    ``lease_end`` is how far the lease reserved in the key store goes. The secret is never
    shown by ``repr``.
    """

    __slots__ = ("_aead", "key_id", "lease_end", "uses")

    def __init__(self, key_id: int, secret: bytes, *, uses: int = 0, lease_end: int = 0) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        if not 0 < key_id <= MAX_KEY_ID:
            raise ValueError("key ids run from 1 to 2^32 - 1")
        self.key_id = key_id
        self._aead = AESGCM(secret)
        self.uses = uses
        self.lease_end = lease_end

    @staticmethod
    def generate_secret() -> bytes:
        return os.urandom(KEY_BYTES)

    @property
    def remaining(self) -> int:
        """Seals left in the current lease."""
        return max(0, self.lease_end - self.uses)

    def extend(self, start: int, end: int) -> None:
        """A new lease [start, end) reserved in the key store replaces what is left."""
        self.uses = start
        self.lease_end = end

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """One envelope with a fresh random nonce; ``KeyExhausted`` past the lease."""
        if self.uses >= self.lease_end:
            raise KeyExhausted(f"key {self.key_id} has no reserved use left")
        self.uses += 1
        header = _HEADER.pack(VERSION, self.key_id)
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + ad)

    def open(self, sealed: Sealed, ad: bytes) -> bytes | None:
        """The plaintext, or None if the tag does not verify (tampered, moved to another
        row, or sealed under another key)."""
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, sealed.header + ad)
        except InvalidTag:
            return None

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id}, uses={self.uses}, lease_end={self.lease_end})"


class KeyRing:
    """One owner's data keys: seals with the newest (active) key, opens with any of them.

    ``destroyed`` rings hold no key and never will: everything sealed for the owner is gone.
    """

    __slots__ = ("_keys", "_prefix", "active", "destroyed", "owner")

    def __init__(self, owner: str, keys: Iterable[DataKey] = (), *, destroyed: bool = False):
        self.owner = owner
        self._prefix = owner.encode() + b"\x00"  # the owner is part of every body's AD
        self._keys: dict[int, DataKey] = {}
        #: The newest key, which seals; None when the ring is empty.
        self.active: DataKey | None = None
        self.destroyed = destroyed
        for key in keys:
            self.add(key)
        if destroyed and self._keys:
            raise ValueError("a destroyed ring holds no key")

    @property
    def keys(self) -> Mapping[int, DataKey]:
        return self._keys

    def add(self, key: DataKey) -> None:
        if self.destroyed:
            raise ValueError("a destroyed ring holds no key")
        self._keys[key.key_id] = key
        if self.active is None or key.key_id > self.active.key_id:
            self.active = key

    @property
    def newest_id(self) -> int:
        return 0 if self.active is None else self.active.key_id

    def can_seal(self) -> bool:
        active = self.active
        return active is not None and active.uses < active.lease_end

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Seal with the active key (``NoActiveKey``, ``KeyExhausted`` when it cannot)."""
        active = self.active
        if active is None:
            raise NoActiveKey(self.owner)
        return active.seal(plaintext, self._prefix + ad)

    def open(self, sealed: Sealed, ad: bytes) -> bytes | None:
        """The plaintext, or None when the key is not held (destroyed) or the body does not
        verify."""
        key = self._keys.get(sealed.key_id)
        if key is None:
            return None
        return key.open(sealed, self._prefix + ad)

    def __repr__(self) -> str:
        return f"KeyRing({self.owner!r}, keys={sorted(self.keys)}, destroyed={self.destroyed})"


class MasterKey:
    """The key that wraps every data key: 32 bytes from the operator (``server.master_key``).

    ``key_id`` is a public fingerprint (an HMAC of a constant, so it reveals nothing of the
    key) stored with every wrapped key, so the server can tell at start whether its master key
    is the one the data was wrapped with.
    """

    __slots__ = ("_aead", "_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"the master key is {KEY_BYTES} bytes")
        self._secret = secret
        self._aead = AESGCM(secret)
        self.key_id = self.derive("master key id")[:8].hex()

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(KEY_BYTES))

    @property
    def secret(self) -> bytes:
        """The raw key, for writing it to its file (and nothing else)."""
        return self._secret

    def derive(self, label: str) -> bytes:
        """A 32-byte subkey for ``label`` (HMAC-SHA256 as a PRF)."""
        return hmac.new(self._secret, b"rivet/derive/" + label.encode(), hashlib.sha256).digest()

    def wrap(self, owner: str, key_id: int, secret: bytes) -> bytes:
        """The wrapped form of a data key, bound to its owner and key id."""
        nonce = os.urandom(NONCE_BYTES)
        ad = associated_data("wrap", owner, key_id)
        return bytes([_WRAP_VERSION]) + nonce + self._aead.encrypt(nonce, secret, ad)

    def unwrap(self, owner: str, key_id: int, wrapped: bytes) -> bytes:
        """The data key; ``WrongMasterKey`` if it does not open (never erasure)."""
        if len(wrapped) != _WRAPPED_BYTES or wrapped[0] != _WRAP_VERSION:
            raise WrongMasterKey(f"the wrapped key {owner}/{key_id} is malformed")
        nonce = wrapped[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(
                nonce, wrapped[1 + NONCE_BYTES :], associated_data("wrap", owner, key_id)
            )
        except InvalidTag:
            raise WrongMasterKey(
                f"the wrapped key {owner}/{key_id} does not open with master key {self.key_id}"
            ) from None

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"
