"""Server secrets in ``<data_dir>/keys/``: Ed25519 signing keys with key ids, and a MAC key.

Layout (the directory is 0700, every file 0600, all owned by the server's user)::

    keys/
      mac.key               32 random bytes: the HMAC-SHA256 key for one-time login codes
                            and refresh secrets (A2)
      active                the kid of the key that signs new access tokens (ASCII)
      ed25519-<kid>.key     the active Ed25519 private key, 32 raw bytes
      ed25519-<kid>.pub     public keys of earlier signing keys, kept so tokens they signed
                            still verify until they expire, 32 raw bytes

A kid is the first 12 hex digits of SHA-256 of the raw public key. Loading recomputes it, so
a key file whose content does not match its name is refused rather than trusted.

*Decision (permissions):* loading **refuses** to start (``InsecureKeyStore``) when the keys
directory or any key file grants group or others any permission, is not owned by the user
running the server, or is not a plain directory/file (symlinks are refused). A warning is not
enough: a readable ``mac.key`` lets anyone brute-force login codes offline, and a writable
directory lets anyone plant a ``.pub`` and forge tokens. The error names the path and the
``chmod`` that fixes it.

Crash safety: every file is written under a temporary name, fsynced, renamed into place and
the directory fsynced. First start writes ``mac.key``, then the private key, then
``active``. ``rotate()`` writes the new private key, points ``active`` at it, then demotes the
old key (writes its ``.pub``, deletes its private file), so only the active key can ever sign.
Loading finishes an interrupted first start or rotation and removes stale temporary files.

One server process owns a data directory; concurrent rotation by two processes is not
supported. All I/O here is blocking: call ``open`` and ``rotate`` at start-up or through
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEYS_DIRNAME: Final = "keys"
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
MAC_KEY_BYTES: Final = 32
ED25519_KEY_BYTES: Final = 32
#: A kid: 12 lowercase hex digits (48 bits of the public key's SHA-256).
KID_PATTERN: Final = r"[0-9a-f]{12}"

_MAC_FILE: Final = "mac.key"
_ACTIVE_FILE: Final = "active"
_PRIVATE_SUFFIX: Final = ".key"
_PUBLIC_SUFFIX: Final = ".pub"
_KEY_PREFIX: Final = "ed25519-"
_TMP_PREFIX: Final = ".tmp-"
_KEY_NAME = re.compile(rf"{_KEY_PREFIX}({KID_PATTERN})(\.key|\.pub)")
_KID = re.compile(KID_PATTERN)


class KeyStoreError(Exception):
    """The keys directory cannot be used as it is; the server must not start."""


class InsecureKeyStore(KeyStoreError):
    """A key file or the keys directory is reachable by other users (see the module doc)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The kid of a public key: the first 12 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:12]


def keys_dir(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIRNAME


class ServerKeys:
    """The signing key set and the MAC key. Build with ``open`` or ``ephemeral``.

    Only the active key signs; every kept key (the active one included) verifies. The
    object never exposes a private key, and its repr shows no secret.
    """

    def __init__(
        self,
        *,
        active: Ed25519PrivateKey,
        retired: dict[str, Ed25519PublicKey],
        mac_key: bytes,
        directory: Path | None,
    ) -> None:
        if len(mac_key) != MAC_KEY_BYTES:
            raise ValueError(f"the MAC key must be {MAC_KEY_BYTES} bytes")
        self._active = active
        self._active_kid = key_id(active.public_key())
        self._public = dict(retired)
        self._public[self._active_kid] = active.public_key()
        self._mac_key = mac_key
        self._directory = directory

    @classmethod
    def open(cls, data_dir: Path) -> ServerKeys:
        """Load the keys of ``<data_dir>/keys/``, creating them on first start.

        Raises ``InsecureKeyStore`` for loose permissions or foreign ownership, and
        ``KeyStoreError`` for missing or corrupt files that cannot be recovered safely.
        """
        Path(data_dir).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        directory = keys_dir(data_dir)
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass
        else:
            os.chmod(directory, DIR_MODE)  # the umask may have removed owner bits
            _fsync_dir(Path(data_dir))
        _check_private(directory, os.lstat(directory), want_dir=True)
        return _load(directory)

    @classmethod
    def ephemeral(cls) -> ServerKeys:
        """Fresh keys kept only in memory (tests, the ``memory`` store)."""
        return cls(
            active=Ed25519PrivateKey.generate(),
            retired={},
            mac_key=secrets.token_bytes(MAC_KEY_BYTES),
            directory=None,
        )

    @property
    def directory(self) -> Path | None:
        """The keys directory, or None for ephemeral keys."""
        return self._directory

    @property
    def active_kid(self) -> str:
        return self._active_kid

    @property
    def kids(self) -> tuple[str, ...]:
        """Every kid that verifies, sorted."""
        return tuple(sorted(self._public))

    @property
    def mac_key(self) -> bytes:
        """The HMAC-SHA256 key for login codes and refresh secrets (A2)."""
        return self._mac_key

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with the active key (whose kid is ``active_kid``)."""
        return self._active.sign(data)

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The verification key for ``kid``, or None if this server does not keep it."""
        return self._public.get(kid)

    def rotate(self) -> str:
        """Make a new key the active one and return its kid.

        Earlier keys keep verifying (their public halves stay); their private halves are
        deleted. Persisted before it returns when the keys live in a directory.
        """
        new = Ed25519PrivateKey.generate()
        new_kid = key_id(new.public_key())
        while new_kid in self._public:  # a 48-bit collision: astronomically rare, but cheap
            new = Ed25519PrivateKey.generate()
            new_kid = key_id(new.public_key())
        old, old_kid = self._active, self._active_kid
        if self._directory is not None:
            _write_file(self._directory, _private_name(new_kid), _private_raw(new))
            _write_file(self._directory, _ACTIVE_FILE, new_kid.encode("ascii"))
            _demote(self._directory, old_kid, old)
        self._active, self._active_kid = new, new_kid
        self._public[new_kid] = new.public_key()
        return new_kid

    def __repr__(self) -> str:
        return f"ServerKeys(active_kid={self._active_kid!r}, kids={self.kids!r})"


# --- loading ------------------------------------------------------------------------------


def _load(directory: Path) -> ServerKeys:
    names = os.listdir(directory)
    private: set[str] = set()
    public: set[str] = set()
    for name in names:
        if name.startswith(_TMP_PREFIX):  # a write that crashed before its rename
            os.unlink(directory / name)
            continue
        match = _KEY_NAME.fullmatch(name)
        if match is not None:
            (private if match.group(2) == _PRIVATE_SUFFIX else public).add(match.group(1))
    has_mac = _MAC_FILE in names
    has_active = _ACTIVE_FILE in names

    if not has_mac:
        if has_active or private or public:
            raise KeyStoreError(
                f"{directory / _MAC_FILE} is missing but signing keys exist: restore it from "
                "a backup (refresh sessions and pending login codes depend on it)"
            )
        _write_file(directory, _MAC_FILE, secrets.token_bytes(MAC_KEY_BYTES))
    mac_key = _read_file(directory / _MAC_FILE, exact=MAC_KEY_BYTES)

    if not has_active:
        # Only an interrupted first start leaves no ``active``: no .pub, at most one key.
        if public or len(private) > 1:
            raise KeyStoreError(
                f"{directory / _ACTIVE_FILE} is missing but earlier keys exist: restore it "
                "from a backup"
            )
        if not private:
            first = Ed25519PrivateKey.generate()
            private.add(key_id(first.public_key()))
            _write_file(directory, _private_name(key_id(first.public_key())), _private_raw(first))
        _write_file(directory, _ACTIVE_FILE, next(iter(private)).encode("ascii"))

    active_kid = _read_file(directory / _ACTIVE_FILE, limit=64).decode("ascii", "replace").strip()
    if _KID.fullmatch(active_kid) is None:
        raise KeyStoreError(f"{directory / _ACTIVE_FILE} does not hold a kid")
    if active_kid not in private:
        raise KeyStoreError(
            f"the active key {active_kid} has no private key file "
            f"{directory / _private_name(active_kid)}"
        )
    active = _load_private(directory, active_kid)

    retired: dict[str, Ed25519PublicKey] = {}
    for kid in sorted(private - {active_kid}):
        # A rotation was interrupted after writing this key: keep it for verification only.
        key = _load_private(directory, kid)
        _demote(directory, kid, key)
        retired[kid] = key.public_key()
    for kid in sorted(public - {active_kid}):
        retired[kid] = _load_public(directory, kid)
    return ServerKeys(active=active, retired=retired, mac_key=mac_key, directory=directory)


def _load_private(directory: Path, kid: str) -> Ed25519PrivateKey:
    path = directory / _private_name(kid)
    key = Ed25519PrivateKey.from_private_bytes(_read_file(path, exact=ED25519_KEY_BYTES))
    if key_id(key.public_key()) != kid:
        raise KeyStoreError(f"{path} does not hold the key its name says (kid mismatch)")
    return key


def _load_public(directory: Path, kid: str) -> Ed25519PublicKey:
    path = directory / _public_name(kid)
    key = Ed25519PublicKey.from_public_bytes(_read_file(path, exact=ED25519_KEY_BYTES))
    if key_id(key) != kid:
        raise KeyStoreError(f"{path} does not hold the key its name says (kid mismatch)")
    return key


def _demote(directory: Path, kid: str, key: Ed25519PrivateKey) -> None:
    """Keep ``kid`` for verification only: write its public half, delete its private half."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    _write_file(directory, _public_name(kid), raw)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / _private_name(kid))
    _fsync_dir(directory)


# --- files --------------------------------------------------------------------------------


def _private_name(kid: str) -> str:
    return f"{_KEY_PREFIX}{kid}{_PRIVATE_SUFFIX}"


def _public_name(kid: str) -> str:
    return f"{_KEY_PREFIX}{kid}{_PUBLIC_SUFFIX}"


def _private_raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _check_private(path: Path, st: os.stat_result, *, want_dir: bool) -> None:
    """Refuse anything but the server user's own directory/regular file with no group or
    other permission bits (module doc, *Decision (permissions)*)."""
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise InsecureKeyStore(f"{path} must be a directory (symlinks are refused)")
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise InsecureKeyStore(f"{path} must be a regular file (symlinks are refused)")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise InsecureKeyStore(f"{path} is owned by uid {st.st_uid}, not the server's uid {uid}")
    if st.st_mode & 0o077:
        mode = DIR_MODE if want_dir else FILE_MODE
        raise InsecureKeyStore(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, which other users can reach; "
            f"run: chmod {mode:o} {path}"
        )


def _read_file(path: Path, *, exact: int | None = None, limit: int | None = None) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyStoreError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        _check_private(path, os.fstat(fd), want_dir=False)
        cap = (exact if exact is not None else limit or 0) + 1
        chunks: list[bytes] = []
        size = 0
        while size < cap:
            chunk = os.read(fd, cap - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if exact is not None and len(data) != exact:
        raise KeyStoreError(f"{path} should hold {exact} bytes (corrupt or truncated)")
    if limit is not None and len(data) > limit:
        raise KeyStoreError(f"{path} is larger than {limit} bytes (corrupt)")
    return data


def _write_file(directory: Path, name: str, data: bytes) -> None:
    """Atomically replace ``directory/name`` with ``data``, mode 0600, durably."""
    tmp = directory / f"{_TMP_PREFIX}{name}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    try:
        os.fchmod(fd, FILE_MODE)  # exact, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
